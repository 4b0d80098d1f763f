/*
 * Starts Hadoop's own test clusters in one JVM for sparktf's integration tests:
 * a MiniDFSCluster (NameNode with WebHDFS, DataNodes) and a MiniYARNCluster
 * (ResourceManager and NodeManagers sized for a small machine, memory checks off).
 *
 * Usage: java -cp JARS:CLASSES MiniHadoop WORK_DIR [datanodes] [nodemanagers] [nm-memory-mb] [nm-vcores]
 *
 * Writes core-site.xml, hdfs-site.xml and yarn-site.xml into WORK_DIR/conf (a
 * HADOOP_CONF_DIR for Spark and the tests), every NameNode audit event as one
 * tab-separated line "ok user ip cmd src dst client-id port" into WORK_DIR/audit.log, prints one
 * line "READY {json}" on stdout, and stops both clusters when stdin closes (its
 * owner died or was done) or on SIGTERM.  Commands on stdin, one per line:
 * "kill APPLICATION_ID" kills a YARN application (as `yarn application -kill`).
 */

import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFs;
import org.apache.hadoop.fs.DelegateToFileSystem;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.FsConstants;
import org.apache.hadoop.fs.FsServerDefaults;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.server.namenode.AuditLogger;
import org.apache.hadoop.ipc.Server;
import org.apache.hadoop.yarn.api.records.ApplicationId;
import org.apache.hadoop.yarn.client.api.YarnClient;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

public class MiniHadoop {

    /** Audit events go to this file (set before the NameNode starts). */
    static volatile PrintWriter auditOut;

    /** A NameNode audit logger writing one line per event, so tests can tell who read what. */
    public static class FileAuditLogger implements AuditLogger {
        @Override
        public void initialize(Configuration conf) {
        }

        @Override
        public void logAuditEvent(boolean succeeded, String userName, InetAddress addr,
                                  String cmd, String src, String dst, FileStatus stat) {
            PrintWriter out = auditOut;
            if (out != null) {
                synchronized (out) {
                    out.println((succeeded ? "ok" : "denied") + "\t" + userName + "\t"
                            + (addr == null ? "-" : addr.getHostAddress()) + "\t" + cmd + "\t"
                            + src + "\t" + (dst == null ? "-" : dst) + "\t" + caller());
                    out.flush();
                }
            }
        }
    }

    /**
     * The local file system with chmod done in this JVM (java.nio), as libhadoop's NativeIO does
     * on a real NodeManager.  Maven's Hadoop jars have no libhadoop, and without it Hadoop runs
     * one `chmod` process per file: localising test_yarn's packed venv (~16,000 files) spent
     * about 60 s on that.  Modes beyond rwx bits (sticky, setuid) still go to `chmod`.
     */
    public static class NioChmodFileSystem extends RawLocalFileSystem {
        private static final PosixFilePermission[] BITS = {
            PosixFilePermission.OTHERS_EXECUTE, PosixFilePermission.OTHERS_WRITE,
            PosixFilePermission.OTHERS_READ, PosixFilePermission.GROUP_EXECUTE,
            PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_READ,
            PosixFilePermission.OWNER_EXECUTE, PosixFilePermission.OWNER_WRITE,
            PosixFilePermission.OWNER_READ};

        @Override
        public void setPermission(Path p, FsPermission permission) throws IOException {
            short mode = permission.toShort();
            if ((mode & ~0777) != 0) {
                super.setPermission(p, permission);
                return;
            }
            Set<PosixFilePermission> perms = EnumSet.noneOf(PosixFilePermission.class);
            for (int i = 0; i < BITS.length; i++) {
                if ((mode & (1 << i)) != 0) {
                    perms.add(BITS[i]);
                }
            }
            Files.setPosixFilePermissions(pathToFile(p).toPath(), perms);
        }
    }

    /** ``fs.AbstractFileSystem.file.impl`` (what the NodeManager's localizer uses): Hadoop's
     * LocalFs over {@link NioChmodFileSystem}. */
    public static class NioChmodFs extends ChecksumFs {
        public NioChmodFs(URI uri, Configuration conf) throws IOException, URISyntaxException {
            super(new NioChmodRawFs(uri, conf));
        }
    }

    /** Hadoop's RawLocalFs over {@link NioChmodFileSystem} (RawLocalFs cannot be given one). */
    static class NioChmodRawFs extends DelegateToFileSystem {
        NioChmodRawFs(URI uri, Configuration conf) throws IOException, URISyntaxException {
            super(uri, new NioChmodFileSystem(), conf, FsConstants.LOCAL_FS_URI.getScheme(),
                  false);
        }

        @Override
        public int getUriDefaultPort() {
            return -1;
        }

        @Override
        public FsServerDefaults getServerDefaults(Path f) throws IOException {
            return fsImpl.getServerDefaults(f);
        }

        @Override
        @Deprecated
        public FsServerDefaults getServerDefaults() throws IOException {
            return fsImpl.getServerDefaults();
        }

        @Override
        public boolean isValidName(String src) {
            return true;
        }
    }

    /** The calling client: its RPC client id (one per client object) and remote port. */
    static String caller() {
        byte[] id = Server.getClientId();
        StringBuilder hex = new StringBuilder();
        for (byte b : id == null ? new byte[0] : id) {
            hex.append(String.format("%02x", b));
        }
        return (hex.length() == 0 ? "-" : hex.toString()) + "\t" + Server.getRemotePort();
    }

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            e.printStackTrace();
            System.out.println("FAILED " + e.toString().replace('\n', ' '));
            System.out.flush();
            Runtime.getRuntime().halt(1);   // non-daemon cluster threads would keep the JVM up
        }
    }

    static void run(String[] args) throws Exception {
        File work = new File(args[0]).getAbsoluteFile();
        int dataNodes = args.length > 1 ? Integer.parseInt(args[1]) : 1;
        int nodeManagers = args.length > 2 ? Integer.parseInt(args[2]) : 2;
        int nmMemory = args.length > 3 ? Integer.parseInt(args[3]) : 6144;
        int nmVcores = args.length > 4 ? Integer.parseInt(args[4]) : 2;
        File confDir = new File(work, "conf");
        confDir.mkdirs();
        auditOut = new PrintWriter(new FileOutputStream(new File(work, "audit.log"), true), true,
                                   StandardCharsets.UTF_8);
        long start = System.nanoTime();

        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(work, "dfs").getPath());
        conf.set("dfs.namenode.audit.loggers", FileAuditLogger.class.getName());
        conf.setInt("dfs.replication", Math.min(dataNodes, 3));
        conf.setBoolean("dfs.webhdfs.enabled", true);
        conf.setBoolean("dfs.permissions.enabled", true);
        conf.set("hadoop.proxyuser." + System.getProperty("user.name") + ".hosts", "*");
        conf.set("hadoop.proxyuser." + System.getProperty("user.name") + ".groups", "*");
        MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf).numDataNodes(dataNodes)
                .format(true).build();
        dfs.waitActive();
        FileSystem hdfs = dfs.getFileSystem();
        // Like a real cluster: a world-writable /tmp and a home for every user.
        hdfs.mkdirs(new Path("/tmp"));
        hdfs.setPermission(new Path("/tmp"), new FsPermission((short) 01777));
        hdfs.mkdirs(new Path("/user"));
        hdfs.setPermission(new Path("/user"), new FsPermission((short) 01777));
        long dfsReady = System.nanoTime();

        // Every Configuration made from now on (the NodeManager's container executor makes its
        // own) takes the local file system above from this classpath resource (tests/hadoop).
        Configuration.addDefaultResource("minihadoop-site.xml");
        YarnConfiguration yconf = new YarnConfiguration(dfs.getConfiguration(0));
        yconf.setInt(YarnConfiguration.NM_PMEM_MB, nmMemory);
        // MiniYARNCluster gives each NodeManager this (4096 MB by default), not NM_PMEM_MB.
        yconf.setInt(YarnConfiguration.YARN_MINICLUSTER_NM_PMEM_MB, nmMemory);
        yconf.setInt(YarnConfiguration.NM_VCORES, nmVcores);
        yconf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
        yconf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
        yconf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 256);
        yconf.setInt(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_MB, nmMemory);
        yconf.setInt(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_VCORES, nmVcores);
        // One queue taking the whole cluster (the shaded jar has no capacity-scheduler.xml).
        yconf.set("yarn.scheduler.capacity.root.queues", "default");
        yconf.setInt("yarn.scheduler.capacity.root.default.capacity", 100);
        yconf.setInt("yarn.scheduler.capacity.root.default.maximum-capacity", 100);
        yconf.setFloat("yarn.scheduler.capacity.root.default.user-limit-factor", 1);
        yconf.set("yarn.scheduler.capacity.root.default.state", "RUNNING");
        yconf.set("yarn.scheduler.capacity.root.default.acl_submit_applications", "*");
        yconf.set("yarn.scheduler.capacity.root.default.acl_administer_queue", "*");
        yconf.setInt("yarn.scheduler.capacity.node-locality-delay", -1);
        yconf.setFloat("yarn.scheduler.capacity.maximum-am-resource-percent", 0.5f);
        yconf.setFloat(YarnConfiguration.NM_MAX_PER_DISK_UTILIZATION_PERCENTAGE, 100.0f);
        yconf.setLong(YarnConfiguration.NM_MIN_PER_DISK_FREE_SPACE_MB, 0);
        yconf.setBoolean(YarnConfiguration.RM_WORK_PRESERVING_RECOVERY_ENABLED, false);
        yconf.setBoolean(YarnConfiguration.TIMELINE_SERVICE_ENABLED, false);
        yconf.set("yarn.nodemanager.delete.debug-delay-sec", "0");
        // A killed container's processes get SIGTERM, then SIGKILL after this many ms.
        yconf.setLong(YarnConfiguration.NM_SLEEP_DELAY_BEFORE_SIGKILL_MS, 2000);
        MiniYARNCluster yarn = new MiniYARNCluster("sparktf", nodeManagers, 1, 1);
        yarn.init(yconf);
        yarn.start();
        if (!yarn.waitForNodeManagersToConnect(60000)) {
            throw new IllegalStateException("NodeManagers did not connect within 60 s");
        }
        Configuration live = yarn.getConfig();
        long yarnReady = System.nanoTime();

        String nn = "hdfs://127.0.0.1:" + dfs.getNameNodePort();
        String webhdfs = "127.0.0.1:" + dfs.getNameNode().getHttpAddress().getPort();
        writeSite(new File(confDir, "core-site.xml"), Map.of(
                "fs.defaultFS", nn,
                "hadoop.security.authentication", "simple"));
        Map<String, String> hdfsSite = new LinkedHashMap<>();
        hdfsSite.put("dfs.namenode.rpc-address", "127.0.0.1:" + dfs.getNameNodePort());
        hdfsSite.put("dfs.namenode.http-address", webhdfs);
        hdfsSite.put("dfs.replication", String.valueOf(Math.min(dataNodes, 3)));
        hdfsSite.put("dfs.webhdfs.enabled", "true");
        writeSite(new File(confDir, "hdfs-site.xml"), hdfsSite);
        Map<String, String> yarnSite = new LinkedHashMap<>();
        for (String key : new String[] {
                YarnConfiguration.RM_ADDRESS, YarnConfiguration.RM_SCHEDULER_ADDRESS,
                YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, YarnConfiguration.RM_ADMIN_ADDRESS,
                YarnConfiguration.RM_WEBAPP_ADDRESS}) {
            yarnSite.put(key, live.get(key));
        }
        yarnSite.put(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, "256");
        yarnSite.put(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_MB, String.valueOf(nmMemory));
        writeSite(new File(confDir, "yarn-site.xml"), yarnSite);

        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(yarn, dfs), "mini-hadoop-stop"));
        System.out.println("READY {\"namenode\": \"" + nn + "\", \"webhdfs\": \"" + webhdfs
                + "\", \"rm\": \"" + live.get(YarnConfiguration.RM_ADDRESS)
                + "\", \"rm_webapp\": \"" + live.get(YarnConfiguration.RM_WEBAPP_ADDRESS)
                + "\", \"conf_dir\": \"" + confDir + "\", \"hdfs_seconds\": "
                + String.format("%.1f", (dfsReady - start) / 1e9) + ", \"yarn_seconds\": "
                + String.format("%.1f", (yarnReady - dfsReady) / 1e9) + "}");
        System.out.flush();

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in,
                                                                     StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] words = line.trim().split("\\s+");
            if (words.length == 2 && words[0].equals("kill")) {
                System.out.println(killApplication(live, words[1]));
                System.out.flush();
            }
        }
        // stdin closed: stop the clusters here, timed, then halt.  Stopping them from the
        // shutdown hook instead raced Hadoop's own hooks ("Shutdown in progress") and the
        // JVM took ~40 s to exit after YARN applications had run.
        stop(yarn, dfs);
        Runtime.getRuntime().halt(0);
    }

    static String killApplication(Configuration conf, String id) {
        try (YarnClient client = YarnClient.createYarnClient()) {
            client.init(conf);
            client.start();
            client.killApplication(ApplicationId.fromString(id));
            return "KILLED " + id;
        } catch (Exception e) {
            return "ERROR " + id + " " + e.toString().replace('\n', ' ');
        }
    }

    static final java.util.concurrent.atomic.AtomicBoolean STOPPED =
            new java.util.concurrent.atomic.AtomicBoolean();

    /** Stop both clusters once (from main when stdin closes, or the hook on SIGTERM). */
    static void stop(MiniYARNCluster yarn, MiniDFSCluster dfs) {
        if (STOPPED.getAndSet(true)) {
            return;
        }
        long t0 = System.nanoTime();
        // After YARN applications have run, MiniYARNCluster.stop() takes ~36 s (NodeManagers
        // waiting on cleanup of applications that have long ended).  The tests need only the
        // processes gone, which the fixture checks, so the stop is given 5 s, then the JVM halts.
        Thread yarnStop = new Thread(yarn::stop, "mini-yarn-stop");
        yarnStop.setDaemon(true);
        yarnStop.start();
        try {
            yarnStop.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            long t1 = System.nanoTime();
            dfs.shutdown(true);
            auditOut.close();
            System.err.printf("STOPPED yarn %.1f s, dfs %.1f s%n", (t1 - t0) / 1e9,
                              (System.nanoTime() - t1) / 1e9);
            System.err.flush();
        }
    }

    static void writeSite(File file, Map<String, String> properties) throws IOException {
        StringBuilder xml = new StringBuilder("<?xml version=\"1.0\"?>\n<configuration>\n");
        for (Map.Entry<String, String> e : properties.entrySet()) {
            xml.append("  <property><name>").append(e.getKey()).append("</name><value>")
               .append(e.getValue()).append("</value></property>\n");
        }
        xml.append("</configuration>\n");
        File tmp = new File(file.getPath() + ".tmp");
        Files.writeString(tmp.toPath(), xml.toString());
        Files.move(tmp.toPath(), file.toPath(), java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                   java.nio.file.StandardCopyOption.ATOMIC_MOVE);
    }
}
