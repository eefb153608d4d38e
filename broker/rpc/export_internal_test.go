package rpc

// SetMaxSentPageBytes sets ListSent's byte budget for a page until the
// returned function restores it.
func SetMaxSentPageBytes(n int) (restore func()) {
	old := maxSentPageBytes
	maxSentPageBytes = n
	return func() { maxSentPageBytes = old }
}
