/* getaddrinfo(3) as a program: the libc stub resolver, nothing else.
 *
 * Usage: getaddrinfo NAME...
 * For each NAME, ask with AF_UNSPEC (so the libc sends A and AAAA queries, in
 * parallel for musl and glibc) and print "NAME ADDRESS" per distinct address.
 * Exit status: 0 when every name resolved, 2 when one failed (its gai_strerror
 * text goes to stderr as "NAME: error: TEXT"). Built with musl-gcc by the
 * client tests; plain gcc works too.
 */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

static int resolve(const char *name)
{
    struct addrinfo hints, *res, *ai;
    char text[INET6_ADDRSTRLEN];
    int rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM; /* one entry per address, not one per socket type */
    rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: error: %s\n", name, gai_strerror(rc));
        return 2;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        const void *addr = ai->ai_family == AF_INET6
            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
            : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        if (inet_ntop(ai->ai_family, addr, text, sizeof text) != NULL)
            printf("%s %s\n", name, text);
    }
    freeaddrinfo(res);
    return 0;
}

int main(int argc, char **argv)
{
    int status = 0;
    for (int i = 1; i < argc; i++)
        if (resolve(argv[i]) != 0)
            status = 2;
    return status;
}
