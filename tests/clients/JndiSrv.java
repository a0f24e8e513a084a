// Java's JNDI DNS provider (com.sun.jndi.dns) asking one DNS server for records.
//
// Usage: java JndiSrv.java dns://HOST:PORT TYPE NAME...
// Prints "NAME VALUE" per record, "NAME NXDOMAIN" for a name that does not exist
// and "NAME NODATA" for a name without records of TYPE. Run with the source
// launcher (java File.java): no javac, no build step.
import java.util.Hashtable;
import javax.naming.Context;
import javax.naming.NameNotFoundException;
import javax.naming.NamingEnumeration;
import javax.naming.NamingException;
import javax.naming.directory.Attribute;
import javax.naming.directory.Attributes;
import javax.naming.directory.DirContext;
import javax.naming.directory.InitialDirContext;

public class JndiSrv {
    public static void main(String[] args) throws NamingException {
        if (args.length < 3) {
            System.err.println("usage: java JndiSrv.java dns://HOST:PORT TYPE NAME...");
            System.exit(2);
        }
        Hashtable<String, String> env = new Hashtable<>();
        env.put(Context.INITIAL_CONTEXT_FACTORY, "com.sun.jndi.dns.DnsContextFactory");
        env.put(Context.PROVIDER_URL, args[0]);
        // One second per try, two tries: a lost UDP datagram is retried quickly.
        env.put("com.sun.jndi.dns.timeout.initial", "1000");
        env.put("com.sun.jndi.dns.timeout.retries", "2");
        DirContext ctx = new InitialDirContext(env);
        String type = args[1];
        int status = 0;
        for (int i = 2; i < args.length; i++) {
            String name = args[i];
            try {
                Attributes attrs = ctx.getAttributes(name, new String[] {type});
                Attribute attr = attrs.get(type);
                if (attr == null) {
                    System.out.println(name + " NODATA");
                    continue;
                }
                NamingEnumeration<?> values = attr.getAll();
                while (values.hasMore()) {
                    System.out.println(name + " " + values.next());
                }
            } catch (NameNotFoundException e) {
                System.out.println(name + " NXDOMAIN");
            } catch (NamingException e) {
                System.out.println(name + " ERROR " + e);
                status = 1;
            }
        }
        ctx.close();
        System.exit(status);
    }
}
