/*
 * UDP sendto/recvfrom with an echoing peer: from an unbound socket (the
 * kernel binds it on the first sendto) and from a socket bound to the
 * wildcard address at <port>+1. recvfrom reports the peer's address; the
 * peer sees the app's address and, for the bound socket, the known port.
 */
#include "common.h"

static void roundtrip(int u, const char *msg)
{
    char buf[64];
    struct sockaddr_in to = addr4(other_ip4, port);
    struct sockaddr_storage from = {0};
    socklen_t len = sizeof from;
    char what[64];
    snprintf(what, sizeof what, "sendto(\"%s\")", msg);
    show(what, sendto(u, msg, strlen(msg), 0, (struct sockaddr *)&to, sizeof to));
    show_poll1("poll(IN, 5000)", u, POLLIN, 5000);
    show_data("recvfrom(MSG_DONTWAIT)",
              recvfrom(u, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &len), buf);
    if (from.ss_family)
        show_addr("  from", 0, &from, port);
}

static void app(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    roundtrip(u, "one");
    show_sockname("getsockname", u, port);

    int b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any = addr4("0.0.0.0", port + 1);
    show("bind(0.0.0.0:port+1)", bind(b, (struct sockaddr *)&any, sizeof any));
    roundtrip(b, "two");
    show_sockname("getsockname", b, port + 1);
    roundtrip(b, "bye");
}

static void peer(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any = addr4("0.0.0.0", port);
    if (bind(u, (struct sockaddr *)&any, sizeof any) < 0)
        fatal("bind");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    say("ready");
    for (;;) {
        char buf[64], reply[80];
        struct sockaddr_storage from = {0};
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (show_data("recvfrom", n, buf) < 0)
            break;
        show_addr("  from", 0, &from, port + 1);
        int r = snprintf(reply, sizeof reply, "echo:%.*s", (int)n, buf);
        sendto(u, reply, (size_t)r, 0, (struct sockaddr *)&from, len);
        if (n == 3 && memcmp(buf, "bye", 3) == 0)
            break;
    }
}

SEMANTICS_MAIN(app, peer)
