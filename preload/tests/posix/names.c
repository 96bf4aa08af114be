/*
 * getsockname/getpeername: on a connected client socket (IPv4 and IPv6), a
 * wildcard listener, an accepted socket and a fresh unconnected socket.
 * Ports are printed only as "known" (the program's), "0" or "other".
 * Ports: <port> (peer, IPv4), <port>+1 (app listener), <port>+2 (peer, IPv6).
 */
#include "common.h"

static void app(void)
{
    int s = tcp_client(other_ip4, port);
    show_sockname("client getsockname", s, port);
    show_peername("client getpeername", s, port);

    int l = tcp_server(port + 1);
    show_sockname("listener getsockname", l, port + 1);
    show_peername("listener getpeername", l, port + 1);
    send_str(s, "listening"); /* the peer connects to port + 1 */
    int c = accept_one(l);
    show_sockname("accepted getsockname", c, port + 1);
    show_peername("accepted getpeername", c, port + 1);

    int u = socket(AF_INET, SOCK_STREAM, 0);
    show_sockname("unconnected getsockname", u, port);
    show_peername("unconnected getpeername", u, port);

    struct sockaddr_in6 a6 = addr6(other_ip6, port + 2);
    int s6 = socket(AF_INET6, SOCK_STREAM, 0);
    show("connect(IPv6)", connect(s6, (struct sockaddr *)&a6, sizeof a6));
    show_sockname("IPv6 client getsockname", s6, port + 2);
    show_peername("IPv6 client getpeername", s6, port + 2);

    /* Close everything and wait until the peer has seen it all. */
    expect_str(s, "done");
    close(s6);
    close(c);
    shutdown(s, SHUT_WR);
    expect_eof(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    int l6 = tcp_server_family(AF_INET6, port + 2);
    say("ready");
    int a = accept_one(l);
    show_sockname("accepted getsockname", a, port);
    show_peername("accepted getpeername", a, port);
    expect_str(a, "listening");

    struct sockaddr_in to = addr4(other_ip4, port + 1);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    show("connect", connect(c, (struct sockaddr *)&to, sizeof to));
    show_sockname("client getsockname", c, port + 1);
    show_peername("client getpeername", c, port + 1);

    int a6 = accept_one(l6);
    show_sockname("IPv6 accepted getsockname", a6, port + 2);
    show_peername("IPv6 accepted getpeername", a6, port + 2);
    send_str(a, "done");
    expect_eof(a6);
    expect_eof(c);
    expect_eof(a);
    close(a);
}

SEMANTICS_MAIN(app, peer)
