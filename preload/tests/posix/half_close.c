/*
 * Half-close: the app sends a request and shuts down writing (a further send
 * fails with EPIPE); the peer reads the request and end of file, still sends
 * its response, and the app reads it, then end of file.
 */
#include "common.h"

static void app(void)
{
    char buf[64];
    int s = tcp_client(other_ip4, port);
    show("send(\"request\")", send(s, "request", 7, 0));
    show("shutdown(SHUT_WR)", shutdown(s, SHUT_WR));
    show("send(\"x\", MSG_NOSIGNAL)", send(s, "x", 1, MSG_NOSIGNAL));
    expect_eof(s); /* the peer's response, then its close */
    show_data("recv after EOF", recv(s, buf, sizeof buf, 0), buf);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    expect_eof(c);
    show("send(\"response\")", send(c, "response", 8, MSG_NOSIGNAL));
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
