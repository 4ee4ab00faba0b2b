import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * pgjdbc with its default settings through the router of a tenant that pools
 * by transaction (run with `java PgjdbcPool.java`, the JDK's source launcher).
 * Arguments: port, endpoint label, database, password, test ("executions" or "settings").
 * The tenant is named by options=endpoint=, since a connection to 127.0.0.1 sends no SNI.
 */
public class PgjdbcPool {
  static String port, endpoint, database, password;

  static Connection connect() throws Exception {
    Properties props = new Properties();
    props.setProperty("user", "postgres");
    props.setProperty("password", password);
    props.setProperty("sslmode", "require");
    props.setProperty("options", "endpoint=" + endpoint);
    return DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + port + "/" + database, props);
  }

  static String one(Connection c, String sql) throws Exception {
    try (Statement s = c.createStatement(); ResultSet r = s.executeQuery(sql)) {
      r.next();
      return r.getString(1);
    }
  }

  public static void main(String[] args) throws Exception {
    port = args[0];
    endpoint = args[1];
    database = args[2];
    password = args[3];
    if (args[4].equals("executions")) executions();
    else settings();
  }

  /** 20 connections at once, 30 executions each of one prepared statement (named past prepareThreshold, 5). */
  static void executions() throws Exception {
    AtomicInteger ok = new AtomicInteger();
    List<String> errors = new ArrayList<>();
    List<Thread> threads = new ArrayList<>();
    for (int t = 0; t < 20; t++) {
      final int id = t;
      Thread thread = new Thread(() -> {
        try (Connection c = connect();
             PreparedStatement p = c.prepareStatement("SELECT ?::int * 2, current_setting('extra_float_digits'), current_setting('application_name')")) {
          for (int i = 0; i < 30; i++) {
            try {
              p.setInt(1, id * 100 + i);
              try (ResultSet r = p.executeQuery()) {
                r.next();
                if (r.getInt(1) != (id * 100 + i) * 2) throw new Exception("wrong result " + r.getInt(1));
                if (!r.getString(2).equals("3")) throw new Exception("extra_float_digits is " + r.getString(2));
                if (!r.getString(3).equals("PostgreSQL JDBC Driver")) throw new Exception("application_name is " + r.getString(3));
              }
              ok.incrementAndGet();
            } catch (Exception e) {
              synchronized (errors) { errors.add(e.toString()); }
            }
          }
        } catch (Exception e) {
          synchronized (errors) { errors.add(e.toString()); }
        }
      });
      threads.add(thread);
      thread.start();
    }
    for (Thread thread : threads) thread.join();
    for (String e : errors.subList(0, Math.min(5, errors.size()))) System.err.println(e);
    System.out.println("ok " + ok.get());
  }

  /** Two connections on one server session (pool size 1), each with settings of its own, each sees its own. */
  static void settings() throws Exception {
    try (Connection a = connect(); Connection b = connect()) {
      String workMem = one(a, "SHOW work_mem");
      if (!one(a, "SELECT pg_backend_pid()").equals(one(b, "SELECT pg_backend_pid()"))) throw new Exception("not one server session");
      try (Statement s = a.createStatement()) {
        s.execute("SET application_name = 'jdbc-a'");
        s.execute("SET search_path = alpha, public");
        s.execute("SET TimeZone = 'Asia/Tokyo'");
        s.execute("SET statement_timeout = '7s'");
      }
      try (Statement s = b.createStatement()) {
        s.execute("SET application_name TO 'jdbc-b'");
        s.execute("SET TIME ZONE 'America/New_York'");
        s.execute("SET work_mem TO '3MB'");
      }
      a.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
      for (int i = 0; i < 10; i++) {
        String got = String.join("|", one(a, "SHOW application_name"), one(a, "SHOW search_path"), one(a, "SHOW TimeZone"), one(a, "SHOW statement_timeout"), one(a, "SHOW work_mem"), one(a, "SHOW default_transaction_isolation"), one(a, "SHOW extra_float_digits"));
        if (!got.equals("jdbc-a|alpha, public|Asia/Tokyo|7s|" + workMem + "|serializable|3")) throw new Exception("a sees " + got);
        got = String.join("|", one(b, "SHOW application_name"), one(b, "SHOW search_path"), one(b, "SHOW TimeZone"), one(b, "SHOW statement_timeout"), one(b, "SHOW work_mem"), one(b, "SHOW default_transaction_isolation"), one(b, "SHOW extra_float_digits"));
        if (!got.equals("jdbc-b|\"$user\", public|America/New_York|0|3MB|read committed|3")) throw new Exception("b sees " + got);
      }
      try (Statement s = a.createStatement()) {
        s.execute("RESET ALL");
      }
      // As on a server of its own: start-up values come back (pgjdbc sends extra_float_digits=2 at start-up, then SETs 3).
      String got = String.join("|", one(a, "SHOW application_name"), one(a, "SHOW statement_timeout"), one(a, "SHOW default_transaction_isolation"), one(a, "SHOW extra_float_digits"), one(b, "SHOW work_mem"));
      if (!got.equals("|0|read committed|2|3MB")) throw new Exception("a after RESET ALL sees " + got);
    }
    System.out.println("ok");
  }
}
