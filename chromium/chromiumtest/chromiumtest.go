// Package chromiumtest drives a real headless Chromium from tests, over
// the DevTools protocol (chromedp), for tests that must see a page as a
// person does: rendered, with its scripts run, and with every network
// request it makes on record.
//
// Where no Chromium is installed the test is skipped with a line saying
// how to install it; under CI=true it fails instead, since .ci/run
// installs Chromium.
package chromiumtest

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"kurier.dev/kurier/chromium"
)

// Browser is one headless Chromium with one tab, and what its pages did.
type Browser struct {
	// Ctx runs chromedp actions in the tab.
	Ctx context.Context

	mu       sync.Mutex
	errors   []string
	requests []string
}

// New starts Chromium for t, with a window of width×height CSS pixels, and
// stops it when t ends. Every action must finish within timeout.
func New(t testing.TB, width, height int, timeout time.Duration) *Browser {
	t.Helper()
	bin, err := chromium.Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: .ci/run installs it", err)
		}
		t.Skipf("%v: apt-get install chromium", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.WindowSize(width, height))
	for _, f := range chromium.Flags(t.TempDir()) {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if hasValue {
			opts = append(opts, chromedp.Flag(name, value))
		} else {
			opts = append(opts, chromedp.Flag(name, true))
		}
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })

	b := &Browser{Ctx: ctx}
	// Listen starts the browser and the tab, with the network and runtime
	// domains on, so every request from the first navigation is seen.
	if err := chromedp.Listen(ctx, b.observe); err != nil {
		t.Fatalf("start Chromium %s: %v", bin, err)
	}
	return b
}

func (b *Browser) observe(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg := ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += ": " + ev.ExceptionDetails.Exception.Description
		}
		b.errors = append(b.errors, "exception: "+msg)
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			b.errors = append(b.errors, "console.error: "+strings.Join(parts, " "))
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	case *network.EventLoadingFailed:
		b.errors = append(b.errors, "loading failed: "+ev.ErrorText)
	}
}

// Errors returns the script exceptions, console errors and failed loads
// seen so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// Requests returns the URL of every request the pages made so far, in
// order, data: and blob: URLs included.
func (b *Browser) Requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...)
}

// Do runs actions in the tab and fails t if one fails.
func (b *Browser) Do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		t.Fatalf("chromium: %v (page errors: %v)", err, b.Errors())
	}
}
