/*
 * Writing after the peer closed: the peer closes (FIN); the app reads end of
 * file; its first send still succeeds (and makes the peer's kernel answer
 * RST, seen as ERR|HUP by poll); then sends fail with EPIPE: with
 * MSG_NOSIGNAL no signal, without it SIGPIPE is raised (counted by a
 * handler) for write() and send() alike.
 */
#include "common.h"

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

static void app(void)
{
    char buf[64];
    struct sigaction sa = {.sa_handler = on_sigpipe};
    sigaction(SIGPIPE, &sa, NULL);

    int s = tcp_client(other_ip4, port);
    show_data("read", read(s, buf, sizeof buf), buf); /* the peer closes */
    show("send(\"a\", MSG_NOSIGNAL)", send(s, "a", 1, MSG_NOSIGNAL));
    /* Events 0: only ERR/HUP can wake it, i.e. the peer's RST. */
    show_poll1("poll(0, 5000)", s, 0, 5000);
    show("send(\"b\", MSG_NOSIGNAL)", send(s, "b", 1, MSG_NOSIGNAL));
    say("SIGPIPE count = %d", (int)sigpipes);
    show("send(\"c\", MSG_NOSIGNAL)", send(s, "c", 1, MSG_NOSIGNAL));
    say("SIGPIPE count = %d", (int)sigpipes);
    show("write(\"d\")", write(s, "d", 1));
    say("SIGPIPE count = %d", (int)sigpipes);
    show("send(\"e\", 0)", send(s, "e", 1, 0));
    say("SIGPIPE count = %d", (int)sigpipes);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
