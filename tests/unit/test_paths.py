import pytest

from sparktf.paths import absolute_path


@pytest.mark.parametrize("path,fs,expected", [
    ("hdfs://nn:8020/a", "file://", "hdfs://nn:8020/a"),
    ("s3a://bucket/k", "hdfs://nn:8020", "s3a://bucket/k"),
    ("/abs/x", "hdfs://nn:8020", "hdfs://nn:8020/abs/x"),
    ("/abs/x", "file:///", "file:///abs/x"),
    ("rel/x", "hdfs://nn:8020/", "hdfs://nn:8020/user/alice/rel/x"),
    ("rel/x", "file:///", "file:///work/dir/rel/x"),
])
def test_absolute_path(path, fs, expected):
    assert absolute_path(path, fs, "/work/dir", user="alice") == expected


def test_unknown_scheme_is_an_error():
    with pytest.raises(ValueError, match="unknown file system scheme 'ftp'"):
        absolute_path("ftp://x/y", "file://", "/w")
