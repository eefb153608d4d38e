package main

import "kurier.dev/kurier/envelope"

// printable returns text that others control fit for a terminal
// (envelope.Printable): control characters could redraw the screen, and
// bidirectional overrides reorder what follows them.
func printable(s string) string { return envelope.Printable(s) }
