package cms

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
)

// This file reads BER (X.690) from a stream, for the CMS that arrives in
// pieces: indefinite lengths, constructed strings, end-of-contents octets.
// It keeps only a stack of the elements it is inside, so its memory does
// not grow with the input; every length is checked against the element
// around it, nesting is bounded, and truncated input is an error, not a
// short read. Structures small enough to hold (algorithm identifiers,
// certificates, signer infos) are read whole with readDER and handed to
// cryptobyte, which then checks them as DER.

const (
	// maxBERDepth bounds nesting: CMS needs about ten levels, and deeper
	// input is an attack on the stack, not a message.
	maxBERDepth = 32
	// maxHeaderElement caps one element read whole (readDER): the
	// certificates and signer infos of a SignedData, the recipient infos of
	// an EnvelopedData. A chain of a few certificates takes a few KiB.
	maxHeaderElement = 1 << 20
)

// berTag is an identifier: the identifier octet for tag numbers below 31
// (so that it equals cryptobyte's asn1.Tag of the same element), and the
// class and constructed bits with the number shifted above them otherwise.
type berTag uint32

const constructedBit = 0x20

func (t berTag) constructed() bool { return t&constructedBit != 0 }

// berHeader is one element's identifier and length; length is -1 when
// indefinite.
type berHeader struct {
	tag    berTag
	length int64
	off    int64 // of the identifier, for messages
}

// frame is a constructed element being read.
type frame struct {
	end   int64 // where its contents end; -1 when indefinite
	limit int64 // the nearest definite end around it, itself included
	done  bool  // end reached (for indefinite: end-of-contents consumed)
}

// berReader reads BER elements from r.
type berReader struct {
	r     *bufio.Reader
	off   int64
	stack []frame
}

func newBERReader(r io.Reader) *berReader {
	return &berReader{r: bufio.NewReaderSize(r, 32<<10)}
}

// malformed returns an error wrapping ErrMalformed that says where.
func (b *berReader) malformed(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrMalformed, b.off, fmt.Sprintf(format, args...))
}

// limit is how far the innermost definite element lets reading go.
func (b *berReader) limit() int64 {
	if len(b.stack) == 0 {
		return math.MaxInt64
	}
	return b.stack[len(b.stack)-1].limit
}

// readByte reads one byte within the current limit.
func (b *berReader) readByte() (byte, error) {
	if b.off >= b.limit() {
		return 0, b.malformed("element runs past the end of the one around it")
	}
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, b.readError(err)
	}
	b.off++
	return c, nil
}

// read reads len(p) bytes or fails; the caller has checked the limit.
func (b *berReader) read(p []byte) error {
	n, err := io.ReadFull(b.r, p)
	b.off += int64(n)
	if err != nil {
		return b.readError(err)
	}
	return nil
}

// readError turns the end of the input inside a structure into
// ErrMalformed (the input is truncated), and wraps other read errors as
// they are.
func (b *berReader) readError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated at byte %d: %w", ErrMalformed, b.off, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read cms at byte %d: %w", b.off, err)
}

// next reads the header of the next element inside the current one. At
// the end of the current one it returns ok false, having consumed the
// end-of-contents octets of an indefinite length.
func (b *berReader) next() (h berHeader, ok bool, err error) {
	if n := len(b.stack); n > 0 {
		f := &b.stack[n-1]
		if f.done || (f.end >= 0 && b.off == f.end) {
			f.done = true
			return berHeader{}, false, nil
		}
	}
	h.off = b.off
	id, err := b.readByte()
	if err != nil {
		return h, false, err
	}
	h.tag = berTag(id)
	if id&0x1f == 0x1f { // high tag number: base 128, at most 21 bits
		var num uint32
		for i := 0; ; i++ {
			c, err := b.readByte()
			if err != nil {
				return h, false, err
			}
			if i == 0 && c == 0x80 || i == 3 {
				return h, false, b.malformed("tag number not minimal or too large")
			}
			num = num<<7 | uint32(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
		if num < 0x1f {
			return h, false, b.malformed("tag number %d in the long form", num)
		}
		h.tag = berTag(id&0xe0) | berTag(num)<<8 | 0x1f
	}
	c, err := b.readByte()
	if err != nil {
		return h, false, err
	}
	switch {
	case c < 0x80:
		h.length = int64(c)
	case c == 0x80:
		if !h.tag.constructed() {
			return h, false, b.malformed("indefinite length on a primitive element")
		}
		h.length = -1
	case c == 0xff:
		return h, false, b.malformed("reserved length octet")
	default:
		n := int(c & 0x7f)
		if n > 7 {
			return h, false, b.malformed("length of %d octets", n)
		}
		for range n {
			c, err := b.readByte()
			if err != nil {
				return h, false, err
			}
			h.length = h.length<<8 | int64(c)
		}
	}
	if id == 0 { // end-of-contents
		f := b.top()
		if f == nil || f.end >= 0 || h.length != 0 {
			return h, false, b.malformed("end-of-contents outside an indefinite length")
		}
		f.done = true
		return berHeader{}, false, nil
	}
	if h.length > b.limit()-b.off {
		return h, false, b.malformed("length %d runs past the end of the element around it", h.length)
	}
	return h, true, nil
}

func (b *berReader) top() *frame {
	if len(b.stack) == 0 {
		return nil
	}
	return &b.stack[len(b.stack)-1]
}

// enter steps into constructed element h.
func (b *berReader) enter(h berHeader) error {
	if !h.tag.constructed() {
		return b.malformed("primitive element where a constructed one belongs")
	}
	if len(b.stack) >= maxBERDepth {
		return b.malformed("nested more than %d deep", maxBERDepth)
	}
	f := frame{end: -1, limit: b.limit()}
	if h.length >= 0 {
		f.end = b.off + h.length
		f.limit = f.end
	}
	b.stack = append(b.stack, f)
	return nil
}

// leave steps out of the current element, which must have nothing left.
func (b *berReader) leave(what string) error {
	_, ok, err := b.next()
	if err != nil {
		return err
	}
	if ok {
		return b.malformed("bytes after the %s", what)
	}
	b.stack = b.stack[:len(b.stack)-1]
	return nil
}

// expect reads the next element's header, which must be there and carry
// tag.
func (b *berReader) expect(tag berTag, what string) (berHeader, error) {
	h, ok, err := b.next()
	if err != nil {
		return h, err
	}
	if !ok {
		return h, b.malformed("%s missing", what)
	}
	if h.tag != tag {
		return h, b.malformed("%s expected, found tag %#x", what, uint32(h.tag))
	}
	return h, nil
}

// enterExpected reads the next element's header, which must carry tag,
// and steps into it.
func (b *berReader) enterExpected(tag berTag, what string) error {
	h, err := b.expect(tag, what)
	if err != nil {
		return err
	}
	return b.enter(h)
}

// expectEOF checks that nothing follows the outermost element.
func (b *berReader) expectEOF() error {
	if _, err := b.r.ReadByte(); err == nil {
		return b.malformed("data after the end of the structure")
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("read cms at byte %d: %w", b.off, err)
	}
	return nil
}

// readDER reads the element h whole (its header already read) and returns
// its DER framing: definite minimal lengths, and constructed OCTET STRINGs
// joined into one. Tags and contents are kept as they come (a SET OF is
// not sorted), so that what cryptobyte then reads is what was sent. The
// result is at most about max bytes: every element is charged its
// contents and two header bytes, so that neither long contents nor many
// empty elements grow it past the bound.
func (b *berReader) readDER(h berHeader, max int) ([]byte, error) {
	budget := max
	return b.readDERBudget(h, &budget)
}

func (b *berReader) readDERBudget(h berHeader, budget *int) ([]byte, error) {
	if *budget -= 2; *budget < 0 {
		return nil, fmt.Errorf("%w: at byte %d: structure larger than this reader holds", ErrTooLarge, h.off)
	}
	if !h.tag.constructed() {
		if h.length > int64(*budget) {
			return nil, fmt.Errorf("%w: at byte %d: element of %d bytes, at most %d here", ErrTooLarge, h.off, h.length, *budget)
		}
		*budget -= int(h.length)
		body := make([]byte, h.length)
		if err := b.read(body); err != nil {
			return nil, err
		}
		return appendHeader(nil, h.tag, len(body), body), nil
	}
	if err := b.enter(h); err != nil {
		return nil, err
	}
	var contents []byte
	for {
		c, ok, err := b.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if h.tag == 0x24 && c.tag&^constructedBit != 0x04 {
			return nil, b.malformed("piece of an OCTET STRING is not one")
		}
		der, err := b.readDERBudget(c, budget)
		if err != nil {
			return nil, err
		}
		if h.tag == 0x24 { // keep the pieces' contents only
			der = der[headerLen(der):]
		}
		contents = append(contents, der...)
	}
	b.stack = b.stack[:len(b.stack)-1]
	tag := h.tag
	if tag == 0x24 {
		tag = 0x04
	}
	return appendHeader(nil, tag, len(contents), contents), nil
}

// appendHeader appends the DER identifier and length of an element of tag
// with n bytes of contents, then the contents.
func appendHeader(dst []byte, tag berTag, n int, contents []byte) []byte {
	if tag&0x1f == 0x1f && tag > 0xff {
		num := uint32(tag >> 8)
		dst = append(dst, byte(tag&0xff))
		var buf [4]byte
		i := len(buf)
		for {
			i--
			buf[i] = byte(num & 0x7f)
			if i < len(buf)-1 {
				buf[i] |= 0x80
			}
			num >>= 7
			if num == 0 {
				break
			}
		}
		dst = append(dst, buf[i:]...)
	} else {
		dst = append(dst, byte(tag))
	}
	dst = appendLength(dst, int64(n))
	return append(dst, contents...)
}

// appendLength appends a DER length.
func appendLength(dst []byte, n int64) []byte {
	if n < 0x80 {
		return append(dst, byte(n))
	}
	var buf [8]byte
	i := len(buf)
	for ; n > 0; n >>= 8 {
		i--
		buf[i] = byte(n)
	}
	dst = append(dst, 0x80|byte(len(buf)-i))
	return append(dst, buf[i:]...)
}

// headerLen returns the length of the identifier and length octets of
// the DER element der, which appendHeader wrote.
func headerLen(der []byte) int {
	i := 1
	if der[0]&0x1f == 0x1f {
		for der[i]&0x80 != 0 {
			i++
		}
		i++
	}
	if der[i] < 0x80 {
		return i + 1
	}
	return i + 1 + int(der[i]&0x7f)
}

// stringReader reads the contents of a string element as they stream: a
// primitive one's body, or the bodies of the pieces of a constructed one
// (pieces of the same string type, which BER lets nest).
type stringReader struct {
	b         *berReader
	piece     berTag // primitive tag of the pieces
	base      int    // stack depth outside the element
	remaining int64  // of the current primitive body
	primitive bool   // the element itself is primitive
	done      bool
}

// newStringReader starts reading element h (its header already read),
// whose pieces, if constructed, are primitive elements of tag piece.
func newStringReader(b *berReader, h berHeader, piece berTag) (*stringReader, error) {
	s := &stringReader{b: b, piece: piece, base: len(b.stack)}
	if !h.tag.constructed() {
		s.primitive, s.remaining = true, h.length
		return s, nil
	}
	return s, b.enter(h)
}

// declared returns the length of a primitive string element, known before
// it is read, so that an oversized one is refused before; -1 for pieces.
func (s *stringReader) declared() int64 {
	if !s.primitive {
		return -1
	}
	return s.remaining
}

func (s *stringReader) Read(p []byte) (int, error) {
	for {
		if s.remaining > 0 {
			if len(p) == 0 {
				return 0, nil
			}
			n := int(min(int64(len(p)), s.remaining))
			n, err := s.b.r.Read(p[:n])
			s.b.off += int64(n)
			s.remaining -= int64(n)
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return n, s.b.readError(err)
			}
			return n, nil
		}
		if s.done || s.primitive {
			s.done = true
			return 0, io.EOF
		}
		h, ok, err := s.b.next()
		if err != nil {
			return 0, err
		}
		switch {
		case !ok:
			s.b.stack = s.b.stack[:len(s.b.stack)-1]
			s.done = len(s.b.stack) == s.base
		case h.tag == s.piece:
			s.remaining = h.length
		case h.tag == s.piece|constructedBit:
			if err := s.b.enter(h); err != nil {
				return 0, err
			}
		default:
			return 0, s.b.malformed("piece of tag %#x in a string of pieces of tag %#x", uint32(h.tag), uint32(s.piece))
		}
	}
}
