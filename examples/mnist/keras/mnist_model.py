"""The small CNN shared by the MNIST examples and the demo's single-process baseline."""


def build_model(tf):
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(64, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dropout(0.25),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def parse_csv(line):
    """``label,p0,...,p783`` -> (float32 image 784 scaled to [0, 1], int label)."""
    import numpy as np
    values = np.array(line.split(","), dtype=np.float32)
    return values[1:] / 255.0, int(values[0])
