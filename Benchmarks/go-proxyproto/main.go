// Times go-proxyproto's parser and encoder on the headers that Benchmarks/CodecTimings times,
// the same way: the best of 7 runs of a million operations, in nanoseconds per operation.
//
// Run with Benchmarks/codec-compare.sh (GOPATH mode against Debian's
// golang-github-pires-go-proxyproto-dev).
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

const runs = 7
const iterations = 1_000_000

// The header bytes, as hex, so both programs read the same input.
var headers = []struct{ name, hex string }{
	{"v2 INET", "0d0a0d0a000d0a515549540a2111000cc0000201c633640704c801bb"},
	{"v2 INET6", "0d0a0d0a000d0a515549540a21210024" +
		"20010db8000000000000000000000001" + "20010db8ffff00000000000000000022" + "c80101bb"},
	{"v1 TCP4", hex.EncodeToString([]byte("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"))},
	{"v1 TCP6", hex.EncodeToString([]byte("PROXY TCP6 2001:db8::1 2001:db8:ffff::22 51234 443\r\n"))},
	{"v1 UNKNOWN", hex.EncodeToString([]byte("PROXY UNKNOWN\r\n"))},
}

func best(operation func()) float64 {
	bestNanos := time.Duration(1<<63 - 1)
	for run := 0; run < runs; run++ {
		start := time.Now()
		for i := 0; i < iterations; i++ {
			operation()
		}
		if elapsed := time.Since(start); elapsed < bestNanos {
			bestNanos = elapsed
		}
	}
	return float64(bestNanos.Nanoseconds()) / iterations
}

func main() {
	var sink *proxyproto.Header
	for _, header := range headers {
		raw, err := hex.DecodeString(header.hex)
		if err != nil {
			panic(err)
		}
		source := bytes.NewReader(raw)
		reader := bufio.NewReader(source)
		// Fail loudly if the library does not accept the header at all.
		if _, err := proxyproto.Read(reader); err != nil {
			fmt.Fprintf(os.Stderr, "go-proxyproto rejects %s: %v\n", header.name, err)
			os.Exit(1)
		}
		nanos := best(func() {
			source.Reset(raw)
			reader.Reset(source)
			parsed, err := proxyproto.Read(reader)
			if err != nil {
				panic(err)
			}
			sink = parsed
		})
		fmt.Printf("parse %s\t%.1f\n", header.name, nanos)
	}
	_ = sink

	raw, _ := hex.DecodeString(headers[0].hex)
	parsed, _ := proxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	var out bytes.Buffer
	nanos := best(func() {
		out.Reset()
		if _, err := parsed.WriteTo(&out); err != nil {
			panic(err)
		}
	})
	fmt.Printf("encode v2 INET\t%.1f\n", nanos)
}
