package store

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"kurier.dev/kurier/broker"
)

// Key layout. This file is the only one that knows how keys are built; the
// rest of the package calls these functions.
//
// Every key starts with a one-letter table name and a slash. Variable-length
// parts (message ids, addresses) are written as str(s): a 2-byte big-endian
// length followed by the bytes, so that no value of one part can be mistaken
// for the start of the next, whatever characters ids and addresses may hold
// in the future. Numbers are fixed-width big-endian so that byte order is
// numeric order. Blob ids are fixed-width (32 lowercase hex digits).
//
//	m/<id>                              message record (JSON of broker.Message)
//	c/str(id)str(rcpt)                  copy record (JSON of broker.Copy)
//	x/str(rcpt)<received u64>str(id)    mailbox index of local copies, empty value; sorts by received time, then id
//	y/str(sender)<received u64>str(id)  sent index: every message by its sender (the envelope's from), empty value; sorts by received time, then id
//	e/str(id)<pos u64>                  evidence: its leaf index (u64), then the JSON of broker.Evidence (see evidence.go)
//	n/str(id)                           the next position for id's evidence (u64): how many e/ keys it has, or more
//	s/format                            the layout's version (u64): 2 since positions are counted in n/, 4 since the sent index
//	i/<index u64>                       transparency log leaf: value is the key (e/…) of the evidence at that leaf index
//	t/<level u8><index u64>             transparency log tree node (RFC 6962): its 32-byte hash; level 0 holds the leaf hashes
//	s/logsize                           leaves in the transparency log (u64)
//	o/str(domain)str(id)                outbound queue: a message waiting for the node of domain (JSON of broker.Outbound)
//	p/str(domain)<index u64>            push queue: own evidence (by leaf index) that the node of domain must be sent; value is its e/ key
//	w/<deadline u64>str(id)str(rcpt)    copies by deadline (broker.Copy.Deadline), empty value
//	r/<blob>                            blob reference: value is the id of the message using it
//	b/<blob>/c<index u32>               blob chunk, index from 0
//	b/<blob>/h                          blob header (JSON of blobHeader); sorts after the chunks
//	s/evseq                             legacy: last node-wide evidence counter (u64), written by versions before this layout; only Open reads it
//
// received and deadline are Unix nanoseconds with the sign bit flipped, so
// that times before 1970 still sort first.
//
// pos orders one message's evidence in the order it was stored: the
// message's n/ counter, then one more (stores written before per-message
// positions used a node-wide counter there, which sorts the same way; Open
// gives such a store its n/ counters once, from its e/ keys).
// Node-wide, the transparency log's leaf index is the order of issue.
//
// A tree node is stored once it is complete, that is when the last leaf
// under it is appended (see log.go); it never changes afterwards.
//
// The y/ index is written with the message (CreateMessage); Open builds
// it once for the messages of a store of format 3 or older (format.go).
//
// Keys read by the committer (m/, c/, n/, o/, s/, r/, b/<blob>/h) are
// written only by the committer, and by Open before it starts (n/ and
// s/format, see format.go); see commit.go. So are e/, i/, t/, p/ and w/.

const (
	// maxKeyPart bounds ids and addresses stored in keys (str uses 2 length
	// bytes; real ones are far shorter: UUIDs, addresses ≤ 318 bytes).
	maxKeyPart = 1024
	blobIDLen  = 32 // hex digits of 16 random bytes
)

var (
	logSizeKey  = []byte("s/logsize")
	formatKey   = []byte("s/format")
	blobsPrefix = []byte("b/")
	duePrefix   = []byte("w/")
	// legacySeqKey is where versions with a node-wide evidence counter kept
	// it; every one of them wrote it with its first evidence.
	legacySeqKey = []byte("s/evseq")
)

// checkKeyPart reports whether s may be used as an id or address in a key.
func checkKeyPart(what, s string) error {
	if s == "" || len(s) > maxKeyPart {
		return fmt.Errorf("%w: %s must be 1 to %d bytes", broker.ErrInvalid, what, maxKeyPart)
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readStr reads a str() part from the start of b and returns it and the rest.
func readStr(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

func key(table string, capacity int) []byte {
	b := make([]byte, 0, len(table)+capacity)
	return append(b, table...)
}

func messageKey(id string) []byte {
	return append(key("m/", len(id)), id...)
}

func copyKey(id, rcpt string) []byte {
	b := key("c/", 4+len(id)+len(rcpt))
	b = appendStr(b, id)
	return appendStr(b, rcpt)
}

func inboxPrefix(rcpt string) []byte {
	return appendStr(key("x/", 2+len(rcpt)+8+2+36), rcpt)
}

// inboxSuffix is the part of a mailbox index key after inboxPrefix; it is
// also what a paging cursor encodes.
func inboxSuffix(received time.Time, id string) []byte {
	b := timeKeyPart(make([]byte, 0, 8+2+len(id)), received)
	return appendStr(b, id)
}

func inboxKey(rcpt string, received time.Time, id string) []byte {
	return append(inboxPrefix(rcpt), inboxSuffix(received, id)...)
}

// parseInboxSuffix returns the message id from an inboxSuffix.
func parseInboxSuffix(suffix []byte) (id string, ok bool) {
	if len(suffix) < 8 {
		return "", false
	}
	id, rest, ok := readStr(suffix[8:])
	if !ok || len(rest) != 0 || id == "" {
		return "", false
	}
	return id, true
}

// encodeCursor and decodeCursor turn an inboxSuffix into the opaque paging
// cursor that Inbox hands out, and back. Sent's cursors have the same form
// (sentSuffix is an inboxSuffix); what names a listing is passed apart.
func encodeCursor(suffix []byte) string {
	return base64.RawURLEncoding.EncodeToString(suffix)
}

func decodeCursor(what, c string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed %s cursor", broker.ErrInvalid, what)
	}
	if _, ok := parseInboxSuffix(b); !ok {
		return nil, fmt.Errorf("%w: malformed %s cursor", broker.ErrInvalid, what)
	}
	return b, nil
}

func sentPrefix(sender string) []byte {
	return appendStr(key("y/", 2+len(sender)+8+2+36), sender)
}

// sentKey is the sent index key of message id from sender; its part after
// sentPrefix is an inboxSuffix.
func sentKey(sender string, received time.Time, id string) []byte {
	return append(sentPrefix(sender), inboxSuffix(received, id)...)
}

// copiesPrefix is the prefix of the copy keys of message id.
func copiesPrefix(id string) []byte {
	return appendStr(key("c/", 2+len(id)+2+64), id)
}

func evidencePrefix(id string) []byte {
	return appendStr(key("e/", 2+len(id)+8), id)
}

func evidenceKey(id string, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(evidencePrefix(id), pos)
}

// parseEvidenceKey splits an evidence key into message id and position.
func parseEvidenceKey(k []byte) (id string, pos uint64, ok bool) {
	rest, found := bytes.CutPrefix(k, []byte("e/"))
	if !found {
		return "", 0, false
	}
	id, rest, ok = readStr(rest)
	if !ok || id == "" || len(rest) != 8 {
		return "", 0, false
	}
	return id, binary.BigEndian.Uint64(rest), true
}

func positionKey(id string) []byte {
	return appendStr(key("n/", 2+len(id)), id)
}

func outboundPrefix(domain string) []byte {
	return appendStr(key("o/", 2+len(domain)+2+36), domain)
}

func outboundKey(domain, id string) []byte {
	return appendStr(outboundPrefix(domain), id)
}

// parseOutboundKey returns the message id of a key under outboundPrefix.
func parseOutboundKey(prefix, k []byte) (id string, ok bool) {
	id, rest, ok := readStr(k[len(prefix):])
	return id, ok && id != "" && len(rest) == 0
}

func pushPrefix(domain string) []byte {
	return appendStr(key("p/", 2+len(domain)+8), domain)
}

func pushKey(domain string, index uint64) []byte {
	return binary.BigEndian.AppendUint64(pushPrefix(domain), index)
}

// timeKeyPart encodes a time so that byte order is time order.
func timeKeyPart(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

func dueKey(deadline time.Time, id, rcpt string) []byte {
	b := timeKeyPart(key("w/", 8+4+len(id)+len(rcpt)), deadline)
	b = appendStr(b, id)
	return appendStr(b, rcpt)
}

// parseDueKey splits a key under w/ into deadline, message id and recipient.
func parseDueKey(k []byte) (deadline time.Time, id, rcpt string, ok bool) {
	rest, found := bytes.CutPrefix(k, duePrefix)
	if !found || len(rest) < 8 {
		return time.Time{}, "", "", false
	}
	deadline = time.Unix(0, int64(binary.BigEndian.Uint64(rest)^(1<<63))).UTC()
	id, rest, ok = readStr(rest[8:])
	if !ok || id == "" {
		return time.Time{}, "", "", false
	}
	rcpt, rest, ok = readStr(rest)
	if !ok || rcpt == "" || len(rest) != 0 {
		return time.Time{}, "", "", false
	}
	return deadline, id, rcpt, true
}

// encodeSeq and decodeSeq encode the log size under s/ and the leaf index
// in evidence values.
func encodeSeq(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func decodeSeq(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("counter is %d bytes, want 8", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

func leafKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(key("i/", 8), index)
}

// treeNodeKey is the key of the tree node at level (0 for leaves) and
// index within the level, as compact.NodeID numbers them. Levels are below
// 64.
func treeNodeKey(level uint, index uint64) []byte {
	b := append(key("t/", 9), byte(level))
	return binary.BigEndian.AppendUint64(b, index)
}

func blobRefKey(blob string) []byte {
	return append(key("r/", len(blob)), blob...)
}

func blobHeaderKey(blob string) []byte {
	b := append(key("b/", blobIDLen+2), blob...)
	return append(b, "/h"...)
}

func blobChunkPrefix(blob string) []byte {
	b := append(key("b/", blobIDLen+2+4), blob...)
	return append(b, "/c"...)
}

func blobChunkKey(blob string, index uint32) []byte {
	return binary.BigEndian.AppendUint32(blobChunkPrefix(blob), index)
}

// Kinds of key under b/.
const (
	blobKeyChunk  = 'c'
	blobKeyHeader = 'h'
)

// parseBlobKey splits a key under b/ into the blob id and its kind
// (blobKeyChunk or blobKeyHeader).
func parseBlobKey(k []byte) (id string, kind byte, ok bool) {
	rest, found := bytes.CutPrefix(k, blobsPrefix)
	if !found || len(rest) < blobIDLen+2 || rest[blobIDLen] != '/' {
		return "", 0, false
	}
	id = string(rest[:blobIDLen])
	switch kind, tail := rest[blobIDLen+1], rest[blobIDLen+2:]; {
	case kind == blobKeyHeader && len(tail) == 0:
		return id, kind, true
	case kind == blobKeyChunk && len(tail) == 4:
		return id, kind, true
	}
	return "", 0, false
}

// validBlobID reports whether id has the form newBlobID produces.
func validBlobID(id string) bool {
	if len(id) != blobIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
