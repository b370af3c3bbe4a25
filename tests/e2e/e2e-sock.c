/*
 * e2e-sock: the e2e tier's small socket tool, for both levels (the first
 * level's initramfs and the second-level guest's root filesystem hold only
 * busybox, which has no vsock or Unix-socket client). run.sh builds it with
 * `gcc -static`.
 *
 *   e2e-sock [-t S] [-r S] [-c PORT] [-R] ADDRESS
 *       Connects to ADDRESS (or listens there and accepts one connection),
 *       then copies standard input to the socket and the socket to standard
 *       output until both directions end: at the end of standard input it
 *       shuts down its sending side, and it exits when the peer has done
 *       the same. Exit status 0 when all of that worked. On standard
 *       error it then says how long each direction took:
 *         e2e-sock: sent N bytes in T ms       (connection open to the
 *                                               last byte written)
 *         e2e-sock: received N bytes in T ms   (the first byte received
 *                                               to the peer's end of data)
 *       the receiving side's time is the transfer's rate at that end.
 *   e2e-sock [-t S] [-r S] http unix:PATH METHOD URI [BODY]
 *       One HTTP/1.1 request over a Unix socket; prints the status code and
 *       the body on one line ("204 " for no body). Exit status 0 for a 2xx
 *       status, 3 for another, 1 for an error.
 *
 * ADDRESS: tcp:IPV4:PORT, tcp-listen:PORT, vsock:CID:PORT,
 * vsock-listen:PORT, unix:PATH, unix-listen:PATH.
 *
 *   -t S     give up (exit 2) after S seconds in all (default 60)
 *   -r S     retry connecting for up to S seconds (default: one attempt)
 *   -R       one direction after the other: receive to the peer's end of
 *            data first, then send standard input (the peer, without -R,
 *            sends at once); exits once the peer has acknowledged all of it
 *   -c PORT  Firecracker's vsock handshake on a unix: connection: write
 *            "CONNECT PORT\n" and expect "OK <host port>\n" (retried with
 *            -r: the device closes the connection while the guest has no
 *            listener)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "e2e-sock";

static void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: %s [-t S] [-r S] [-c PORT] [-R] ADDRESS\n"
                    "       %s [-t S] [-r S] http unix:PATH METHOD URI [BODY]\n",
            prog, prog);
    exit(1);
}

/* pump's child, killed with this process on a timeout. */
static pid_t child_pid;
static long timeout_s = 60;

static void on_alarm(int sig)
{
    (void)sig;
    if (child_pid > 0)
        kill(child_pid, SIGKILL);
    static const char msg[] = "e2e-sock: timed out\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A parsed ADDRESS. */
struct address {
    int listen;
    socklen_t len;
    int family;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_vm vm;
        struct sockaddr_un un;
    } u;
};

static unsigned long number(const char *s)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "%s: '%s' is not a number\n", prog, s);
        exit(1);
    }
    return n;
}

static void parse_address(const char *a, struct address *out)
{
    memset(out, 0, sizeof *out);
    const char *rest;
    if (!strncmp(a, "tcp-listen:", 11)) {
        out->listen = 1;
        out->family = AF_INET;
        out->u.in.sin_family = AF_INET;
        out->u.in.sin_addr.s_addr = htonl(INADDR_ANY);
        out->u.in.sin_port = htons(number(a + 11));
        out->len = sizeof out->u.in;
    } else if (!strncmp(a, "tcp:", 4)) {
        char host[64];
        rest = strrchr(a + 4, ':');
        if (!rest || rest - (a + 4) >= (long)sizeof host)
            usage();
        memcpy(host, a + 4, rest - (a + 4));
        host[rest - (a + 4)] = 0;
        out->family = AF_INET;
        out->u.in.sin_family = AF_INET;
        if (inet_pton(AF_INET, host, &out->u.in.sin_addr) != 1)
            usage();
        out->u.in.sin_port = htons(number(rest + 1));
        out->len = sizeof out->u.in;
    } else if (!strncmp(a, "vsock-listen:", 13)) {
        out->listen = 1;
        out->family = AF_VSOCK;
        out->u.vm.svm_family = AF_VSOCK;
        out->u.vm.svm_cid = VMADDR_CID_ANY;
        out->u.vm.svm_port = number(a + 13);
        out->len = sizeof out->u.vm;
    } else if (!strncmp(a, "vsock:", 6)) {
        char cid[16];
        rest = strchr(a + 6, ':');
        if (!rest || rest - (a + 6) >= (long)sizeof cid)
            usage();
        memcpy(cid, a + 6, rest - (a + 6));
        cid[rest - (a + 6)] = 0;
        out->family = AF_VSOCK;
        out->u.vm.svm_family = AF_VSOCK;
        out->u.vm.svm_cid = number(cid);
        out->u.vm.svm_port = number(rest + 1);
        out->len = sizeof out->u.vm;
    } else if (!strncmp(a, "unix-listen:", 12) || !strncmp(a, "unix:", 5)) {
        out->listen = a[4] == '-';
        rest = a + (out->listen ? 12 : 5);
        if (strlen(rest) >= sizeof out->u.un.sun_path) {
            fprintf(stderr, "%s: path too long: %s\n", prog, rest);
            exit(1);
        }
        out->family = AF_UNIX;
        out->u.un.sun_family = AF_UNIX;
        strcpy(out->u.un.sun_path, rest);
        out->len = sizeof out->u.un;
    } else {
        usage();
    }
}

/* Reads one line (up to the newline, at most cap - 1 bytes) byte by byte,
 * so nothing after it is consumed. Returns its length, -1 at EOF first. */
static int read_line(int fd, char *buf, int cap)
{
    int n = 0;
    while (n < cap - 1) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return n ? n : -1;
        buf[n++] = c;
        if (c == '\n')
            break;
    }
    buf[n] = 0;
    return n;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= w;
    }
    return 0;
}

/* Connects (with the handshake), or listens and accepts one connection. */
static int open_socket(const struct address *a, double retry_s, long connect_port)
{
    int s;
    if (a->listen) {
        s = socket(a->family, SOCK_STREAM, 0);
        if (s < 0)
            die("socket");
        int one = 1;
        if (a->family == AF_INET)
            setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->family == AF_UNIX)
            unlink(a->u.un.sun_path);
        if (bind(s, &a->u.sa, a->len) < 0)
            die("bind");
        if (listen(s, 1) < 0)
            die("listen");
        int c = accept(s, NULL, NULL);
        if (c < 0)
            die("accept");
        close(s);
        if (a->family == AF_UNIX)
            unlink(a->u.un.sun_path);
        return c;
    }
    double deadline = now() + retry_s;
    for (;;) {
        const char *failed = NULL;
        int saved = 0;
        s = socket(a->family, SOCK_STREAM, 0);
        if (s < 0)
            die("socket");
        if (connect(s, &a->u.sa, a->len) < 0) {
            failed = "connect";
            saved = errno;
        } else if (connect_port >= 0) {
            char line[64];
            int n = snprintf(line, sizeof line, "CONNECT %ld\n", connect_port);
            if (write_all(s, line, n) < 0) {
                failed = "writing the CONNECT line";
                saved = errno;
            } else if (read_line(s, line, sizeof line) < 0) {
                failed = "no OK line after CONNECT (the connection closed)";
                saved = 0;
            } else if (strncmp(line, "OK ", 3)) {
                fprintf(stderr, "%s: the answer to CONNECT was '%s'\n", prog, line);
                exit(1);
            } else {
                line[strcspn(line, "\n")] = 0;
                fprintf(stderr, "%s: %s\n", prog, line);
            }
        }
        if (!failed)
            return s;
        close(s);
        if (now() >= deadline) {
            errno = saved;
            if (saved)
                die(failed);
            fprintf(stderr, "%s: %s\n", prog, failed);
            exit(1);
        }
        usleep(200 * 1000);
    }
}

/* copy FROM TO: until the end of FROM (counting the bytes in *total, the
 * time of the first in *first); -1 on an error. */
static int copy(int from, int to, long long *total, double *first)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(from, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        if (!*total)
            *first = now();
        if (write_all(to, buf, n) < 0)
            return -1;
        *total += n;
    }
}

/* The socket to standard output; says how long it took. */
static int receive(int s)
{
    long long received = 0;
    double first = now();
    if (copy(s, 1, &received, &first) < 0) {
        fprintf(stderr, "%s: the socket to standard output: %s\n", prog, strerror(errno));
        return 1;
    }
    fprintf(stderr, "%s: received %lld bytes in %.0f ms\n", prog, received, (now() - first) * 1000);
    return 0;
}

/* Standard input to the socket, then the end of data; says how long it
 * took from START. */
static void send_all(int s, double start)
{
    long long sent = 0;
    double first;
    if (copy(0, s, &sent, &first) < 0)
        die("standard input to the socket");
    if (shutdown(s, SHUT_WR) < 0)
        die("shutdown");
    fprintf(stderr, "%s: sent %lld bytes in %.0f ms\n", prog, sent, (now() - start) * 1000);
}

/* Standard input to the socket (a child process), the socket to standard
 * output (this one). Two processes, so that neither direction waits for
 * the other: with one process and blocking writes, both ends of a
 * connection can block writing while the peer, blocked too, reads nothing
 * (and the socket buffers, 256 KiB for vsock, fill up). */
static int pump(int s, int receive_first)
{
    double start = now();
    if (receive_first) {
        /* Half-duplex: the peer's data, then ours. The peer's end of data
         * has been read already, so nothing more arrives to wait for: the
         * close lingers instead until the peer's kernel has acknowledged
         * all of ours (and our end of data). Data still queued here (a
         * rate-limited interface drains it slowly) would be lost if this
         * end's machine powered off right after. */
        int failed = receive(s);
        send_all(s, now());
        struct linger linger = { .l_onoff = 1, .l_linger = timeout_s };
        if (setsockopt(s, SOL_SOCKET, SO_LINGER, &linger, sizeof linger) < 0)
            die("setsockopt SO_LINGER");
        alarm(timeout_s);
        if (close(s) < 0)
            die("close");
        return failed;
    }
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        alarm(timeout_s);
        send_all(s, start);
        _exit(0);
    }
    child_pid = child;
    int failed = receive(s);
    int status;
    if (waitpid(child, &status, 0) < 0)
        die("waitpid");
    return failed || !WIFEXITED(status) || WEXITSTATUS(status) ? 1 : 0;
}

/* One HTTP/1.1 request; prints "<status> <body>". */
static int http(int s, const char *method, const char *uri, const char *body)
{
    char req[8192];
    int n;
    if (body)
        n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     "Accept: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     method, uri, strlen(body), body);
    else
        n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n",
                     method, uri);
    if (n >= (int)sizeof req) {
        fprintf(stderr, "%s: request too long\n", prog);
        return 1;
    }
    if (write_all(s, req, n) < 0)
        die("writing the request");
    /* The head, up to the empty line. */
    char line[1024];
    int status = -1;
    long length = 0;
    for (;;) {
        if (read_line(s, line, sizeof line) < 0) {
            fprintf(stderr, "%s: the connection closed before the end of the response head\n", prog);
            return 1;
        }
        if (status < 0) {
            if (sscanf(line, "HTTP/1.%*d %d", &status) != 1) {
                fprintf(stderr, "%s: not an HTTP status line: %s\n", prog, line);
                return 1;
            }
            continue;
        }
        if (!strcasecmp(line, "\r\n") || !strcmp(line, "\n"))
            break;
        if (!strncasecmp(line, "Content-Length:", 15))
            length = strtol(line + 15, NULL, 10);
    }
    if (length < 0 || length > 1 << 20) {
        fprintf(stderr, "%s: Content-Length %ld\n", prog, length);
        return 1;
    }
    char *b = malloc(length + 1);
    long got = 0;
    while (got < length) {
        ssize_t r = read(s, b + got, length - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "%s: the body ended after %ld of %ld bytes\n", prog, got, length);
            return 1;
        }
        got += r;
    }
    b[length] = 0;
    /* One line: newlines in the body become spaces. */
    for (long i = 0; i < length; i++)
        if (b[i] == '\n' || b[i] == '\r')
            b[i] = ' ';
    printf("%d %s\n", status, b);
    return status >= 200 && status < 300 ? 0 : 3;
}

int main(int argc, char **argv)
{
    double retry_s = 0;
    long connect_port = -1;
    int opt, receive_first = 0;
    while ((opt = getopt(argc, argv, "+t:r:c:R")) != -1) {
        switch (opt) {
        case 't': timeout_s = number(optarg); break;
        case 'r': retry_s = number(optarg); break;
        case 'c': connect_port = number(optarg); break;
        case 'R': receive_first = 1; break;
        default: usage();
        }
    }
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    alarm(timeout_s);
    struct address a;
    if (optind < argc && !strcmp(argv[optind], "http")) {
        if (argc - optind < 4 || argc - optind > 5)
            usage();
        parse_address(argv[optind + 1], &a);
        if (a.family != AF_UNIX || a.listen)
            usage();
        int s = open_socket(&a, retry_s, -1);
        return http(s, argv[optind + 2], argv[optind + 3], argc - optind == 5 ? argv[optind + 4] : NULL);
    }
    if (argc - optind != 1)
        usage();
    parse_address(argv[optind], &a);
    if (connect_port >= 0 && (a.family != AF_UNIX || a.listen))
        usage();
    return pump(open_socket(&a, retry_s, connect_port), receive_first);
}
