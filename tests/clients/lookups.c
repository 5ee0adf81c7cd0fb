/* A DNS client for the deployment tests: resolves COUNT unique names `<prefix><i>.<domain>` with
 * the C library's getaddrinfo (AF_UNSPEC: A and AAAA, as applications ask), RATE lookups per
 * second, one at a time, and prints one line per lookup ("<ms> <rc> <name>") and a summary
 * ("max_ms=... over_ms=... slow=..."). Built static with musl-gcc (or gcc for glibc) and run in
 * a scratch container whose /etc/resolv.conf names the server under test.
 *
 *   lookups COUNT RATE PREFIX DOMAIN SLOW_MS
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: lookups COUNT RATE PREFIX DOMAIN SLOW_MS\n");
        return 2;
    }
    int count = atoi(argv[1]);
    double rate = atof(argv[2]);
    const char *prefix = argv[3], *domain = argv[4];
    double slow_ms = atof(argv[5]);
    double start = now_ms(), max = 0;
    int slow = 0;
    for (int i = 0; i < count; i++) {
        double due = start + i * 1000.0 / rate;
        double t = now_ms();
        if (t < due) {
            struct timespec d = {(time_t)((due - t) / 1000), (long)(((long long)((due - t) * 1e6)) % 1000000000LL)};
            nanosleep(&d, NULL);
        }
        char name[256];
        snprintf(name, sizeof name, "%s%d.%s", prefix, i, domain);
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_DGRAM;
        double t0 = now_ms();
        int rc = getaddrinfo(name, NULL, &hints, &res);
        double ms = now_ms() - t0;
        if (res)
            freeaddrinfo(res);
        if (ms > max)
            max = ms;
        if (ms > slow_ms)
            slow++;
        printf("%.1f %d %s\n", ms, rc, name);
    }
    printf("max_ms=%.1f over_ms=%.0f slow=%d total_ms=%.0f\n", max, slow_ms, slow, now_ms() - start);
    return 0;
}
