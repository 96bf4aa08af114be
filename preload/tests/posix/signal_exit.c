/*
 * Termination signals: an application that leaves SIGTERM at its default
 * action and is killed by it still delivers what it wrote, followed by end
 * of file (the kernel sends a dead process's queued data; lstack must flush
 * before the default action). The app also checks that sigaction() and
 * signal() report what it set (never a handler of lstack's), and that its
 * own handlers run.
 *
 * The peer waits a second before reading so that data is still queued when
 * the app kills itself.
 */
#include "common.h"

#define SIZE 300000

static volatile sig_atomic_t got_hup;

static void on_hup(int sig)
{
    (void)sig;
    got_hup = 1;
}

static const char *handler_name(void (*h)(int))
{
    if (h == SIG_DFL)
        return "SIG_DFL";
    if (h == SIG_IGN)
        return "SIG_IGN";
    if (h == SIG_ERR)
        return "SIG_ERR";
    if (h == on_hup)
        return "on_hup";
    return "another handler";
}

static const char *disposition(int sig)
{
    struct sigaction old;
    if (sigaction(sig, NULL, &old) != 0)
        return errname(errno);
    return handler_name(old.sa_handler);
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + i / 251);
}

static void app(void)
{
    say("SIGTERM before any socket: %s", disposition(SIGTERM));
    int a = tcp_client(other_ip4, port);
    say("SIGTERM once connected: %s", disposition(SIGTERM));
    say("SIGINT once connected: %s", disposition(SIGINT));

    say("signal(SIGINT, SIG_IGN) returned %s", handler_name(signal(SIGINT, SIG_IGN)));
    say("SIGINT now: %s", disposition(SIGINT));
    say("signal(SIGINT, SIG_DFL) returned %s", handler_name(signal(SIGINT, SIG_DFL)));
    say("SIGINT now: %s", disposition(SIGINT));

    struct sigaction sa = {.sa_handler = on_hup}, old;
    show("sigaction(SIGHUP, on_hup)", sigaction(SIGHUP, &sa, &old));
    say("previous SIGHUP: %s", handler_name(old.sa_handler));
    raise(SIGHUP);
    say("the app's SIGHUP handler ran: %d", (int)got_hup);
    sa.sa_handler = SIG_DFL;
    sa.sa_flags = SA_RESTART;
    show("sigaction(SIGHUP, SIG_DFL)", sigaction(SIGHUP, &sa, &old));
    say("previous SIGHUP: %s", handler_name(old.sa_handler));
    show("sigaction(SIGHUP) read back", sigaction(SIGHUP, NULL, &old));
    say("SIGHUP: %s, SA_RESTART %s", handler_name(old.sa_handler),
        old.sa_flags & SA_RESTART ? "set" : "clear");

    static unsigned char data[SIZE];
    for (size_t i = 0; i < SIZE; i++)
        data[i] = pattern(i);
    size_t off = 0;
    while (off < SIZE) {
        ssize_t n = write(a, data + off, SIZE - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    say("write %d bytes = %zu", SIZE, off);
    say("expect end: signal: 15 (SIGTERM)");
    kill(getpid(), SIGTERM);
    pause();
    say("still alive after SIGTERM");
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int a = accept_one(l);
    sleep(1);
    expect_pattern_until_eof(a, pattern);
}

SEMANTICS_MAIN(app, peer)
