package client

import (
	"bufio"
	"fmt"
	"os"
)

// memoryPayload is the largest sealed payload held in memory; a larger one
// goes to a temporary file. Small enough that a payload held twice over
// costs little; large enough that `kurier bench`, which seals thousands of
// small messages before it starts, makes no files.
const memoryPayload = 4 << 20

// spool takes a sealed payload as it is written: in memory up to
// memoryPayload bytes, beyond that in a temporary file, and never more
// than max bytes. payload hands it over; discard drops it.
type spool struct {
	max  int64
	n    int64
	mem  []byte
	file *payloadFile  // once the payload outgrew memory
	w    *bufio.Writer // buffers writes to file
}

// Write appends p to the payload.
func (s *spool) Write(p []byte) (int, error) {
	if s.n+int64(len(p)) > s.max {
		return 0, fmt.Errorf("the sealed message has more than %d bytes, the most allowed", s.max)
	}
	if s.file == nil {
		if s.n+int64(len(p)) <= memoryPayload {
			s.mem = append(s.mem, p...)
			s.n += int64(len(p))
			return len(p), nil
		}
		if err := s.spill(); err != nil {
			return 0, err
		}
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	return n, err
}

// spill moves what is in memory into a new temporary file, which takes all
// further writes.
func (s *spool) spill() error {
	f, err := os.CreateTemp("", "kurier-sealed-*.p7m")
	if err != nil {
		return fmt.Errorf("temporary file for the sealed payload: %w", err)
	}
	s.file = &payloadFile{f: f, remove: f.Name()}
	// Unlinked at once where the system allows it (not on Windows): the
	// open file stays readable, and a crash leaves nothing behind.
	if os.Remove(f.Name()) == nil {
		s.file.remove = ""
	}
	s.w = bufio.NewWriterSize(f, copyBuffer)
	if _, err := s.w.Write(s.mem); err != nil {
		return fmt.Errorf("temporary file for the sealed payload: %w", err)
	}
	s.mem = nil
	return nil
}

// payload ends the writing and returns the payload: in memory, or in a
// file.
func (s *spool) payload() ([]byte, *payloadFile, error) {
	if s.file == nil {
		return s.mem, nil, nil
	}
	if err := s.w.Flush(); err != nil {
		s.discard()
		return nil, nil, fmt.Errorf("temporary file for the sealed payload: %w", err)
	}
	s.file.size = s.n
	return nil, s.file, nil
}

// discard drops what was written, and the file if there is one.
func (s *spool) discard() {
	s.mem = nil
	if s.file != nil {
		s.file.close()
	}
}

// payloadFile is a sealed payload in a file: size bytes from off in f.
type payloadFile struct {
	f         *os.File
	off, size int64
	// remove is the file's name, to remove at close: a temporary file the
	// system would not unlink while open. "" for none.
	remove string
	closed bool
}

// close closes the file, and removes it if it is a named temporary one.
func (p *payloadFile) close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	err := p.f.Close()
	if p.remove != "" {
		if rerr := os.Remove(p.remove); err == nil {
			err = rerr
		}
	}
	return err
}
