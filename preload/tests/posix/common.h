/*
 * Helpers shared by the socket-semantics programs (run by ../semantics.rs).
 *
 * Every program is one side of a conversation:
 *
 *   prog app  <peer-ip4> <port> <peer-ip6>   the side under test: runs once on
 *                                            the kernel and once under
 *                                            LD_PRELOAD=liblstack.so
 *   prog peer <app-ip4>  <port> <app-ip6>    always a plain kernel process in
 *                                            the peer's network namespace
 *
 * Each side prints a transcript on stdout, one line per step: return values,
 * errno names, bytes, event masks; never timings, fd numbers or ephemeral
 * ports. The harness compares the kernel run's transcripts with the lstack
 * run's. The side that must start first (the first server) prints "ready"
 * once it listens; the harness starts the other side only then.
 *
 * Set-up failures that are not part of what a program checks end the
 * program with a "FATAL" line and exit status 1.
 */
#ifndef SEMANTICS_COMMON_H
#define SEMANTICS_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The command line: which side this is, the other side's addresses, and
 * the program's port (programs may also use port + 1 and port + 2). */
__attribute__((unused)) static int is_app;
__attribute__((unused)) static const char *other_ip4;
__attribute__((unused)) static const char *other_ip6;
__attribute__((unused)) static int port;

static inline void parse_args(int argc, char **argv)
{
    if (argc != 5 || (strcmp(argv[1], "app") && strcmp(argv[1], "peer"))) {
        fprintf(stderr, "usage: %s app|peer <other-ip4> <port> <other-ip6>\n", argv[0]);
        exit(2);
    }
    is_app = strcmp(argv[1], "app") == 0;
    other_ip4 = argv[2];
    port = atoi(argv[3]);
    other_ip6 = argv[4];
    /* A transcript line must never wait in a buffer when the process dies. */
    setvbuf(stdout, NULL, _IONBF, 0);
}

/* One transcript line. */
__attribute__((format(printf, 1, 2))) static inline void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    printf("%s\n", line);
}

static inline const char *errname(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

/* Prints "<what> = <r>", or "<what> = -1 <ERRNO>" on failure. */
static inline long show(const char *what, long r)
{
    if (r < 0)
        say("%s = -1 %s", what, errname(errno));
    else
        say("%s = %ld", what, r);
    return r;
}

/* Like show(), and for a successful read of bytes also prints them. */
static inline long show_data(const char *what, long r, const char *buf)
{
    if (r < 0)
        say("%s = -1 %s", what, errname(errno));
    else
        say("%s = %ld \"%.*s\"", what, r, (int)r, buf);
    return r;
}

__attribute__((noreturn)) static inline void fatal(const char *what)
{
    say("FATAL %s: %s", what, errname(errno));
    exit(1);
}

/* --------------------------------------------------------------- addresses */

static inline struct sockaddr_in addr4(const char *ip, int p)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        errno = EINVAL;
        fatal("inet_pton");
    }
    return a;
}

static inline struct sockaddr_in6 addr6(const char *ip, int p)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(p)};
    if (inet_pton(AF_INET6, ip, &a.sin6_addr) != 1) {
        errno = EINVAL;
        fatal("inet_pton");
    }
    return a;
}

/* "ip=<addr> port=<known|other|0>": ports other than `known` are ephemeral
 * and differ from run to run, so only whether the port is the known one is
 * printed. */
static inline void show_addr(const char *what, int r, const struct sockaddr_storage *ss, int known)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int p = -1;
    if (r < 0) {
        say("%s = -1 %s", what, errname(errno));
        return;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        p = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        p = ntohs(a->sin6_port);
    }
    say("%s = 0 family=%s ip=%s port=%s", what,
        ss->ss_family == AF_INET ? "AF_INET" : ss->ss_family == AF_INET6 ? "AF_INET6" : "?",
        ip, p == known ? "known" : p == 0 ? "0" : "other");
}

static inline void show_sockname(const char *what, int fd, int known)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    int r = getsockname(fd, (struct sockaddr *)&ss, &len);
    show_addr(what, r, &ss, known);
}

static inline void show_peername(const char *what, int fd, int known)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    int r = getpeername(fd, (struct sockaddr *)&ss, &len);
    show_addr(what, r, &ss, known);
}

/* ----------------------------------------------------------------- sockets */

/* A TCP listener on the wildcard address of `family` at port `p`. */
static inline int tcp_server_family(int family, int p)
{
    int one = 1;
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        fatal("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(p)};
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
            fatal("bind");
    } else {
        struct sockaddr_in a = addr4("0.0.0.0", p);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
            fatal("bind");
    }
    if (listen(fd, 16) < 0)
        fatal("listen");
    return fd;
}

static inline int tcp_server(int p)
{
    return tcp_server_family(AF_INET, p);
}

/* A blocking TCP connection to ip:p (IPv4). */
static inline int tcp_client(const char *ip, int p)
{
    struct sockaddr_in a = addr4(ip, p);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        fatal("socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        fatal("connect");
    return fd;
}

static inline int accept_one(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        fatal("accept");
    return fd;
}

/* Sends all of `s` (set-up traffic, not a checked step). */
static inline void send_str(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n < 0)
            fatal("send");
        off += (size_t)n;
    }
}

/* Receives exactly strlen(want) bytes and prints them as
 * `expect "<want>" = "<got>"` (with what ended the read early, if anything). */
static inline void expect_str(int fd, const char *want)
{
    char buf[256];
    size_t len = strlen(want), got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n < 0) {
            say("expect \"%s\" = \"%.*s\" then -1 %s", want, (int)got, buf, errname(errno));
            return;
        }
        if (n == 0) {
            say("expect \"%s\" = \"%.*s\" then EOF", want, (int)got, buf);
            return;
        }
        got += (size_t)n;
    }
    say("expect \"%s\" = \"%.*s\"", want, (int)got, buf);
}

/* Reads until end of file (or error) and prints everything that came. */
static inline void expect_eof(int fd)
{
    char buf[256];
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
        if (n < 0) {
            say("read until EOF = \"%.*s\" then -1 %s", (int)got, buf, errname(errno));
            return;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got == sizeof buf)
            break;
    }
    say("read until EOF = \"%.*s\" then EOF", (int)got, buf);
}

/* --------------------------------------------------------- readiness masks */

static inline const char *poll_mask(int m)
{
    static char s[128];
    s[0] = 0;
    if (m & POLLIN) strcat(s, "|IN");
    if (m & POLLPRI) strcat(s, "|PRI");
    if (m & POLLOUT) strcat(s, "|OUT");
    if (m & POLLRDHUP) strcat(s, "|RDHUP");
    if (m & POLLERR) strcat(s, "|ERR");
    if (m & POLLHUP) strcat(s, "|HUP");
    if (m & POLLNVAL) strcat(s, "|NVAL");
    return s[0] ? s + 1 : "-";
}

static inline const char *epoll_mask(uint32_t m)
{
    static char s[128];
    s[0] = 0;
    if (m & EPOLLIN) strcat(s, "|IN");
    if (m & EPOLLPRI) strcat(s, "|PRI");
    if (m & EPOLLOUT) strcat(s, "|OUT");
    if (m & EPOLLRDHUP) strcat(s, "|RDHUP");
    if (m & EPOLLERR) strcat(s, "|ERR");
    if (m & EPOLLHUP) strcat(s, "|HUP");
    return s[0] ? s + 1 : "-";
}

/* poll() on one descriptor; prints "<what> = <r> revents=<mask>". */
static inline int show_poll1(const char *what, int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, timeout_ms);
    if (r < 0)
        say("%s = -1 %s", what, errname(errno));
    else
        say("%s = %d revents=%s", what, r, poll_mask(p.revents));
    return p.revents;
}

/* ------------------------------------------------------------------ epoll */

/* Milliseconds on the monotonic clock (for deadlines, never printed). */
static inline long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

/* Names of the epoll tokens used by the programs (event.data.u32). */
__attribute__((unused)) static const char *const token_names[] = {"?", "sock", "pipe"};

/* One epoll_wait(); prints the result with events sorted by token:
 * "epoll_wait(<timeout>) = <n> sock=IN pipe=IN". */
static inline int ep_report(int ep, int timeout_ms)
{
    struct epoll_event ev[8];
    uint32_t mask[3] = {0};
    char line[256];
    int n = epoll_wait(ep, ev, 8, timeout_ms);
    if (n < 0) {
        say("epoll_wait(%d) = -1 %s", timeout_ms, errname(errno));
        return n;
    }
    for (int i = 0; i < n; i++)
        if (ev[i].data.u32 < 3)
            mask[ev[i].data.u32] |= ev[i].events;
    int len = snprintf(line, sizeof line, "epoll_wait(%d) = %d", timeout_ms, n);
    for (int t = 1; t < 3; t++)
        if (mask[t])
            len += snprintf(line + len, sizeof line - len, " %s=%s", token_names[t],
                            epoll_mask(mask[t]));
    say("%s", line);
    return n;
}

/* Waits up to `timeout_ms` until every token in `want` (bit 1 << token) has
 * been reported, and prints the union of what was reported. */
static inline void ep_collect(int ep, unsigned want, int timeout_ms)
{
    uint32_t mask[3] = {0};
    unsigned seen = 0;
    char line[256];
    long deadline = now_ms() + timeout_ms;
    while ((seen & want) != want && now_ms() < deadline) {
        struct epoll_event ev[8];
        int n = epoll_wait(ep, ev, 8, 50);
        for (int i = 0; i < n; i++)
            if (ev[i].data.u32 < 3) {
                mask[ev[i].data.u32] |= ev[i].events;
                seen |= 1u << ev[i].data.u32;
            }
    }
    int len = snprintf(line, sizeof line, "epoll_wait until all ready =");
    for (int t = 1; t < 3; t++)
        len += snprintf(line + len, sizeof line - len, " %s=%s", token_names[t],
                        epoll_mask(mask[t]));
    say("%s", line);
}

static inline void ep_add(int ep, int fd, uint32_t events, uint32_t token)
{
    struct epoll_event ev = {.events = events, .data.u32 = token};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        fatal("epoll_ctl ADD");
}

/* Reads until end of file (10 s receive timeout) checking every byte
 * against pattern(offset), and prints how many came, how many were wrong
 * and what ended the read. */
static inline void expect_pattern_until_eof(int fd, unsigned char (*pattern)(size_t))
{
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char buf[65536];
    size_t got = 0, bad = 0;
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            bad += buf[i] != pattern(got + (size_t)i);
        got += (size_t)n;
    }
    say("read until EOF = %zu bytes, %zu wrong, then %s", got, bad,
        n == 0 ? "EOF" : errname(errno));
}

/* The program's entry point: the app or the peer side, per the command line. */
#define SEMANTICS_MAIN(app, peer)                                                                  \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        parse_args(argc, argv);                                                                    \
        if (is_app)                                                                                \
            app();                                                                                 \
        else                                                                                       \
            peer();                                                                                \
        return 0;                                                                                  \
    }

#endif
