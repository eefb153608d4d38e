package main

import (
	"fmt"
	"strings"

	"kurier.dev/kurier/evidence/webverify"
)

// serveWeb serves the browser verifier on addr until interrupted.
func (e *env) serveWeb(c *command, addr string) error {
	ln, err := webverify.Listen(addr)
	if err != nil {
		return fmt.Errorf("verify: --serve: %w", err)
	}
	url := webverify.URL(ln)
	if c.json {
		if err := e.printJSON(struct {
			URL string `json:"url"`
		}{url}); err != nil {
			ln.Close()
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "Nachweise prüfen / verify evidence: %s (Ctrl-C beendet / stops)\n", url)
	}
	return webverify.Serve(e.ctx, ln)
}

// writeWeb writes the browser verifier's page into dir.
func (e *env) writeWeb(c *command, dir string) error {
	names, err := webverify.WriteDir(dir)
	if err != nil {
		return fmt.Errorf("verify: --write-web: %w", err)
	}
	if c.json {
		return e.printJSON(struct {
			Dir    string   `json:"dir"`
			Files  []string `json:"files"`
			Header string   `json:"content_security_policy"`
		}{dir, names, webverify.HeaderPolicy})
	}
	fmt.Fprintf(e.stdout, "wrote %s into %s: serve the folder over HTTPS with any web server; index.html carries its Content-Security-Policy, but only a header can forbid other sites to frame the page, so let the server send\n  Content-Security-Policy: %s\n", strings.Join(names, ", "), dir, webverify.HeaderPolicy)
	return nil
}
