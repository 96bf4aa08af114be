/*
 * Connected UDP: connect, then send/recv and write/read with an echoing
 * peer; getsockname/getpeername; a datagram from another port of the peer
 * is not delivered to the connected socket.
 */
#include "common.h"

static void app(void)
{
    char buf[64];
    struct sockaddr_in to = addr4(other_ip4, port);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    show("connect", connect(u, (struct sockaddr *)&to, sizeof to));
    show_sockname("getsockname", u, port);
    show_peername("getpeername", u, port);

    show("send(\"one\")", send(u, "one", 3, 0)); /* a stray datagram, then the echo */
    show_poll1("poll(IN, 5000)", u, POLLIN, 5000);
    show_data("recv(MSG_DONTWAIT)", recv(u, buf, sizeof buf, MSG_DONTWAIT), buf);
    show_data("recv(MSG_DONTWAIT)", recv(u, buf, sizeof buf, MSG_DONTWAIT), buf);

    show("write(\"two\")", write(u, "two", 3));
    show_poll1("poll(IN, 5000)", u, POLLIN, 5000);
    show_data("read", read(u, buf, sizeof buf), buf);

    show("send(\"bye\")", send(u, "bye", 3, 0));
    show_poll1("poll(IN, 5000)", u, POLLIN, 5000);
    show_data("recv(MSG_DONTWAIT)", recv(u, buf, sizeof buf, MSG_DONTWAIT), buf);
}

static void peer(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any = addr4("0.0.0.0", port);
    if (bind(u, (struct sockaddr *)&any, sizeof any) < 0)
        fatal("bind");
    int stray = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in other = addr4("0.0.0.0", port + 1);
    if (bind(stray, (struct sockaddr *)&other, sizeof other) < 0)
        fatal("bind");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    say("ready");
    for (int i = 0;; i++) {
        char buf[64], reply[80];
        struct sockaddr_storage from = {0};
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (show_data("recvfrom", n, buf) < 0)
            break;
        show_addr("  from", 0, &from, port);
        if (i == 0)
            show("sendto(stray, \"stray\")",
                 sendto(stray, "stray", 5, 0, (struct sockaddr *)&from, len));
        int r = snprintf(reply, sizeof reply, "echo:%.*s", (int)n, buf);
        sendto(u, reply, (size_t)r, 0, (struct sockaddr *)&from, len);
        if (n == 3 && memcmp(buf, "bye", 3) == 0)
            break;
    }
}

SEMANTICS_MAIN(app, peer)
