// A DNS client for the failover benchmark (scripts/failover.sh): Go's own resolver (built with
// CGO_ENABLED=0, so never the C library), resolving COUNT names `<prefix><i>.<domain>` with
// net.Resolver.LookupHost (A and AAAA, as applications ask), RATE lookups per second, one at a
// time. Prints one line per lookup ("<ms> <rc> <name>", rc 0 when resolved, 1 otherwise) and a
// summary ("max_ms=... over_ms=... slow=... total_ms=..."), like lookups.c.
//
//	lookups-go COUNT RATE PREFIX DOMAIN SLOW_MS
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: lookups-go COUNT RATE PREFIX DOMAIN SLOW_MS")
		os.Exit(2)
	}
	count, _ := strconv.Atoi(os.Args[1])
	rate, _ := strconv.ParseFloat(os.Args[2], 64)
	prefix, domain := os.Args[3], os.Args[4]
	slowMs, _ := strconv.ParseFloat(os.Args[5], 64)
	r := &net.Resolver{PreferGo: true}
	start := time.Now()
	max, slow := 0.0, 0
	for i := 0; i < count; i++ {
		due := start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		name := fmt.Sprintf("%s%d.%s", prefix, i, domain)
		t0 := time.Now()
		_, err := r.LookupHost(context.Background(), name)
		ms := float64(time.Since(t0).Microseconds()) / 1000
		rc := 0
		if err != nil {
			rc = 1
		}
		if ms > max {
			max = ms
		}
		if ms > slowMs {
			slow++
		}
		fmt.Printf("%.1f %d %s\n", ms, rc, name)
	}
	fmt.Printf("max_ms=%.1f over_ms=%.0f slow=%d total_ms=%.0f\n", max, slowMs, slow,
		float64(time.Since(start).Milliseconds()))
}
