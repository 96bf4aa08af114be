/*
 * recvmmsg/sendmmsg on a UDP socket: five datagrams already queued come back
 * from one non-blocking recvmmsg; sendmmsg sends three in one call; with
 * MSG_WAITFORONE a blocking recvmmsg returns once the first has come; an
 * empty queue with MSG_DONTWAIT is EAGAIN.
 */
#include "common.h"

#define BATCH 8

static void show_batch(const char *what, int n, struct mmsghdr *m, char bufs[][32])
{
    show(what, n);
    for (int i = 0; i < n; i++)
        say("  message %d: %u bytes \"%.*s\"", i, m[i].msg_len, (int)m[i].msg_len, bufs[i]);
}

static int recv_batch(int u, const char *what, int flags)
{
    static char bufs[BATCH][32];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    memset(m, 0, sizeof m);
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof bufs[i]};
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(u, m, BATCH, flags, NULL);
    show_batch(what, n, m, bufs);
    return n;
}

static void app(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any = addr4("0.0.0.0", port);
    if (bind(u, (struct sockaddr *)&any, sizeof any) < 0)
        fatal("bind");
    say("ready");
    show_poll1("poll(IN, 5000)", u, POLLIN, 5000);
    usleep(300000);
    recv_batch(u, "recvmmsg(8, MSG_DONTWAIT)", MSG_DONTWAIT);

    const char *out[3] = {"x", "yy", "zzz"};
    struct sockaddr_in to = addr4(other_ip4, port + 1);
    struct iovec iov[3];
    struct mmsghdr m[3];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 3; i++) {
        iov[i] = (struct iovec){.iov_base = (void *)out[i], .iov_len = strlen(out[i])};
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &to;
        m[i].msg_hdr.msg_namelen = sizeof to;
    }
    int n = sendmmsg(u, m, 3, 0);
    show("sendmmsg(3)", n);
    for (int i = 0; i < n; i++)
        say("  message %d: msg_len %u", i, m[i].msg_len);

    recv_batch(u, "recvmmsg(8, MSG_WAITFORONE)", MSG_WAITFORONE);
    recv_batch(u, "recvmmsg(8, MSG_DONTWAIT) on an empty queue", MSG_DONTWAIT);
}

static void peer(void)
{
    int v = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = addr4("0.0.0.0", port + 1);
    if (bind(v, (struct sockaddr *)&me, sizeof me) < 0)
        fatal("bind");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(v, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in app_addr = addr4(other_ip4, port);
    for (int i = 0; i < 5; i++) {
        char d[8];
        int len = snprintf(d, sizeof d, "d%d", i);
        sendto(v, d, (size_t)len, 0, (struct sockaddr *)&app_addr, sizeof app_addr);
    }
    for (int i = 0; i < 3; i++) {
        char buf[32];
        show_data("recv", recv(v, buf, sizeof buf, 0), buf);
    }
    sendto(v, "done", 4, 0, (struct sockaddr *)&app_addr, sizeof app_addr);
}

SEMANTICS_MAIN(app, peer)
