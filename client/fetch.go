package client

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// maxOpen bounds what opening a payload may parse or produce: the largest
// payload plus room for CMS structure.
const maxOpen = MaxPayload + 1<<20

// stagingPrefix names the temporary folder Fetch creates inside the target
// folder; it is removed when Fetch returns.
const stagingPrefix = ".kurier-fetch-"

// Fetched is a message that was fetched, opened and verified, and whose
// documents were written (by Fetch; Check writes none). It is the proof
// Acknowledge asks for: only Fetch and Check make one.
type Fetched struct {
	MessageID string
	// Envelope is the sender's signed envelope, verified.
	Envelope *envelope.Envelope
	// Files are the paths of the written documents, in the envelope's
	// order; none after Check.
	Files []string
	// Signer is the sender's verified certificate that signed the
	// documents.
	Signer *x509.Certificate
	// Retrieval is the node's verified evidence that the message was
	// handed over: the Retrieval, or the copy's newest evidence (the
	// Acknowledgement or Rejection) when it had been answered before.
	Retrieval *Evidence
	// Sealed and Signed are the paths of the kept originals
	// (FetchOptions.KeepSealed): the payload as delivered, encrypted to
	// the recipient (SealedFile), and the sender-signed original inside
	// it (SignedFile); empty unless kept.
	Sealed, Signed string

	// recipient and head are what Acknowledge builds on, out of reach of
	// the caller: whom this client opened the copy for, and the evidence
	// that ended the fetch, checked against the opened envelope and
	// payload.
	recipient string
	head      Evidence
}

// OpenError is the error of Fetch and Check when the node handed the copy
// over (its Retrieval evidence verified, so the node has recorded the
// retrieval) but the client could not open or verify what it got: it does
// not decrypt with the caller's key, the documents are not signed by the
// sender, or they are not those the envelope lists. Such a message cannot
// be acknowledged; the recipient can refuse it with Reject and code
// evidence.CannotOpen.
type OpenError struct {
	MessageID string
	// Retrieval is the node's verified evidence of the hand-over.
	Retrieval *Evidence
	Err       error
}

// Error says which message was handed over and why it cannot be opened.
func (e *OpenError) Error() string {
	return fmt.Sprintf("fetch %s: the message was handed over but cannot be opened: %v", e.MessageID, e.Err)
}

// Unwrap returns why the message could not be opened.
func (e *OpenError) Unwrap() error { return e.Err }

// WriteError is the error of Fetch when the message opened and verified
// but its documents could not be written into the caller's folder: the
// disk is full, a quota is reached, the folder is not writable, or the
// file system failed. Nothing is wrong with the message; once the cause
// is fixed, fetching it again writes the documents.
type WriteError struct {
	MessageID string
	Dir       string
	Err       error
}

// Error says which message's documents could not be written where, and why.
func (e *WriteError) Error() string {
	return fmt.Sprintf("fetch %s: write the documents into %s: %v", e.MessageID, e.Dir, e.Err)
}

// Unwrap returns the file system's error.
func (e *WriteError) Unwrap() error { return e.Err }

// localError marks a failure of the caller's own file system inside
// unpack, as opposed to a fault of the message: only the latter makes an
// *OpenError.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// Fetch fetches message id from the mailbox, opens and verifies it, and
// writes its documents under their original names into dir, which must
// exist.
//
// Security: this is where the client decides whether to believe a message.
// It checks, and refuses the message on any failure:
//   - the envelope: canonical form, the sender's signature (a participant
//     certificate of envelope.From, valid now, emailProtection, not
//     revoked) and the caller among its recipients;
//   - the payload: size and SHA-256 as the envelope declares;
//   - the content: it decrypts with the caller's encryption key, and the
//     signature inside is again the sender's, valid now;
//   - the bundle: only regular files, every name a plain file name, names
//     and sizes exactly those the envelope lists, in the same order, and
//     (version 3 envelopes) each document's SHA-256 the one it lists
//     (ErrDocumentDigest otherwise);
//   - the node's Retrieval evidence about the caller's copy.
//
// A failure to open the content after the node handed it over is an
// *OpenError; a failure to write the opened documents into dir is a
// *WriteError.
//
// Stage, then commit: the payload is streamed to a temporary file inside
// dir while it is hashed and checked against the envelope, then opened as
// a stream (decrypted, the signature's content read, the bundle unpacked)
// into a temporary folder inside dir, each document synced. The content
// read that way is not yet authenticated: only once the sender's
// signature over all of it has verified are the documents moved into dir,
// and if any of their names already exists in dir nothing is moved. A
// failed Fetch writes nothing into dir (only a process killed mid-way
// leaves its .kurier-fetch-* folder behind). Memory use does not grow
// with the message.
//
// dir is made, with its parents, if it does not exist.
func (c *Client) Fetch(ctx context.Context, id, dir string) (*Fetched, error) {
	return c.FetchWith(ctx, id, FetchOptions{Dir: dir})
}

// Names of the originals FetchOptions.KeepSealed keeps beside the
// documents. SealedFile opens with openssl cms -decrypt (the recipient's
// encryption key) into SignedFile, which openssl cms -verify checks and
// whose content is the documents' tar file.
const (
	SealedFile = "payload.p7m"
	SignedFile = "signed.p7m"
)

// FetchOptions say where and how FetchWith writes a message.
type FetchOptions struct {
	// Dir is the folder for the documents, made if missing.
	Dir string
	// PerMessage writes into a new folder Dir/ID instead, so that
	// documents of different messages never share a folder.
	PerMessage bool
	// KeepSealed keeps, beside the documents, the payload as delivered
	// (SealedFile, still encrypted to the recipient) and the
	// sender-signed original (SignedFile): what an archive keeps to show
	// later what was delivered and who signed it. Their names must not
	// be those of documents of the message.
	KeepSealed bool
}

// FetchWith is Fetch with options.
func (c *Client) FetchWith(ctx context.Context, id string, o FetchOptions) (*Fetched, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("fetch %s: no folder to write the documents into", id)
	}
	if o.PerMessage {
		if err := envelope.CheckID(id); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		o.Dir = filepath.Join(o.Dir, id)
	}
	return c.fetch(ctx, id, o.Dir, o.KeepSealed)
}

// Check fetches message id and makes every check of Fetch, but writes
// no document anywhere: to acknowledge a message whose documents were
// fetched before, the client opens it again rather than take the
// caller's word. Only the sealed payload passes through a temporary file
// (in os.TempDir); the documents are read as a stream and dropped.
func (c *Client) Check(ctx context.Context, id string) (*Fetched, error) {
	return c.fetch(ctx, id, "", false)
}

// fetch is Fetch, writing the documents into dir, or nowhere for "",
// and keeping the sealed originals there if keep.
func (c *Client) fetch(ctx context.Context, id, dir string, keep bool) (f *Fetched, _ error) {
	if err := envelope.CheckID(id); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if err := c.refreshCRL(ctx); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	if c.id.EncCert == nil || c.id.EncKey == nil {
		return nil, fmt.Errorf("fetch %s: the identity has no encryption certificate and key to open messages with", id)
	}
	if dir != "" {
		// Made if missing, like mkdir -p, and removed again if the fetch
		// fails: a failed fetch leaves no folder that looks like one.
		undo, err := mkdirAll(dir, 0o700)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: the folder for the documents: %w", id, err)
		}
		defer func() {
			if f == nil {
				undo()
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.mailbox.Fetch(ctx, &kurierv1.FetchRequest{MessageId: id})
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	se := first.GetEnvelope()
	if se == nil {
		return nil, fmt.Errorf("fetch %s: the node did not send the envelope first", id)
	}
	env, err := c.checkEnvelope(se.GetEnvelope(), se.GetSignature())
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	if env.ID != id {
		return nil, fmt.Errorf("fetch %s: the node sent the envelope of message %s", id, env.ID)
	}
	// Refuse early, before the node has handed the message over, where
	// the documents could not be written anyway.
	if dir != "" {
		if err := checkTargets(dir, env.Files, keep); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", id, err)
		}
	}

	staging, err := os.MkdirTemp(dir, stagingPrefix)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	defer os.RemoveAll(staging)
	payload, last, err := receive(stream, env, filepath.Join(staging, SealedFile))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	defer payload.Close()
	retrieval, err := c.checkCopyEvidence(last, env, se.GetEnvelope())
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", id, err)
	}
	signedPath := ""
	if keep && dir != "" {
		signedPath = filepath.Join(staging, SignedFile)
	}
	names, signer, err := c.unpack(env, payload, staging, dir != "", signedPath)
	var local *localError
	switch {
	case errors.As(err, &local):
		return nil, &WriteError{MessageID: id, Dir: dir, Err: local.err}
	case err != nil:
		return nil, &OpenError{MessageID: id, Retrieval: &retrieval, Err: err}
	}
	var paths []string
	var sealed, signed string
	if dir != "" {
		if signedPath != "" {
			// Into the staged folder, to be committed with the documents;
			// the payload kept whole on disk first, as the documents are.
			err := payload.Sync()
			if cerr := payload.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, &WriteError{MessageID: id, Dir: dir, Err: err}
			}
			for _, name := range []string{SealedFile, SignedFile} {
				if err := os.Rename(filepath.Join(staging, name), filepath.Join(staging, stagedFiles, name)); err != nil {
					return nil, &WriteError{MessageID: id, Dir: dir, Err: err}
				}
			}
			names = append(slices.Clip(names), SealedFile, SignedFile)
		}
		if paths, err = commit(filepath.Join(staging, stagedFiles), dir, names); err != nil {
			return nil, &WriteError{MessageID: id, Dir: dir, Err: err}
		}
		if signedPath != "" {
			sealed, signed, paths = paths[len(paths)-2], paths[len(paths)-1], paths[:len(paths)-2]
		}
	}
	shown := retrieval
	return &Fetched{MessageID: id, Envelope: env, Files: paths, Signer: signer, Retrieval: &shown, Sealed: sealed, Signed: signed, recipient: c.addr, head: retrieval}, nil
}

// checkEnvelope parses and verifies a signed envelope as its recipient:
// signed now by a participant certificate of its sender, addressed to the
// caller, within the client's limits.
func (c *Client) checkEnvelope(envBytes, sig []byte) (*envelope.Envelope, error) {
	env, err := envelope.Parse(envBytes)
	if err != nil {
		return nil, err
	}
	v, err := cms.VerifyDetached(sig, envBytes, c.participantPolicy(0))
	if err != nil {
		return nil, fmt.Errorf("envelope signature: %w", err)
	}
	if err := signedBy(v.Signer, env.From); err != nil {
		return nil, fmt.Errorf("envelope signature: %w", err)
	}
	if !slices.Contains(env.To, c.addr) {
		return nil, fmt.Errorf("the message is not addressed to %s", c.addr)
	}
	if env.PayloadSize > MaxPayload {
		return nil, fmt.Errorf("the payload has %d bytes, this client opens at most %d", env.PayloadSize, MaxPayload)
	}
	return env, nil
}

// fetchStream is the part of a Fetch stream that receive reads.
type fetchStream interface {
	Recv() (*kurierv1.FetchResponse, error)
}

// receive reads the payload chunks of a Fetch stream into a new file at
// path while hashing them, then the final evidence frame. It checks size
// and digest against env and returns the file, open at its start, for the
// caller to close.
func receive(stream fetchStream, env *envelope.Envelope, path string) (*os.File, *kurierv1.Evidence, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, err
	}
	last, err := receiveInto(f, stream, env)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, last, nil
}

// receiveInto is receive writing to f.
func receiveInto(f *os.File, stream fetchStream, env *envelope.Envelope) (*kurierv1.Evidence, error) {
	h := sha256.New()
	w := io.MultiWriter(f, h)
	var n int64
	var last *kurierv1.Evidence
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch part := resp.GetPart().(type) {
		case *kurierv1.FetchResponse_Chunk:
			if last != nil {
				return nil, errors.New("the node sent payload after the evidence")
			}
			n += int64(len(part.Chunk))
			if n > env.PayloadSize {
				return nil, fmt.Errorf("the payload is longer than the %d bytes the envelope declares", env.PayloadSize)
			}
			if _, err := w.Write(part.Chunk); err != nil {
				return nil, fmt.Errorf("store payload: %w", err)
			}
		case *kurierv1.FetchResponse_Evidence:
			if last != nil {
				return nil, errors.New("the node sent two evidence frames")
			}
			last = part.Evidence
		default:
			return nil, fmt.Errorf("unexpected frame %T", part)
		}
	}
	if last == nil {
		return nil, errors.New("the node ended the stream without the Retrieval evidence")
	}
	if n != env.PayloadSize {
		return nil, fmt.Errorf("the payload has %d bytes, the envelope declares %d", n, env.PayloadSize)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != env.PayloadSHA256 {
		return nil, fmt.Errorf("the payload's SHA-256 is %s, the envelope declares %s", sum, env.PayloadSHA256)
	}
	return last, nil
}

// checkCopyEvidence verifies the evidence that ends a Fetch stream: a
// Retrieval issued under the caller's domain (or, fetched again, the
// caller's Acknowledgement or Rejection; see verifyEvidence) about the
// caller's copy of exactly this envelope and payload.
func (c *Client) checkCopyEvidence(pb *kurierv1.Evidence, env *envelope.Envelope, envBytes []byte) (Evidence, error) {
	ev, err := c.verifyEvidence(pb, env.ID)
	if err != nil {
		return Evidence{}, fmt.Errorf("retrieval evidence: %w", err)
	}
	st := ev.Statement
	switch {
	case st.Type != evidence.Retrieval && !st.Type.ByRecipient():
		return Evidence{}, fmt.Errorf("retrieval evidence: got %s", st.Type)
	case st.Recipient != c.addr:
		return Evidence{}, fmt.Errorf("retrieval evidence: about %s's copy, not %s's", st.Recipient, c.addr)
	case st.Sender != env.From, st.EnvelopeSHA256 != envelope.Digest(envBytes), st.PayloadSHA256 != env.PayloadSHA256:
		return Evidence{}, errors.New("retrieval evidence: names another sender, envelope or payload")
	}
	return ev, nil
}

// stagedFiles is the folder inside the staging folder that receives the
// documents.
const stagedFiles = "files"

// unpack decrypts payload with the caller's encryption key, verifies the
// sender's signature inside, and checks the bundled documents against the
// envelope, writing them into staging/files if write is set. It returns
// the documents' names in order and the signer's certificate. A failure
// to write is a *localError.
//
// Security-sensitive: it streams, so the documents are written before the
// signature over them is known to verify, and are then only staged; it
// returns without error only once the signature has verified, and only
// then may its caller commit them.
//
// With keep set, the decrypted SignedData is also written there, whole and
// synced, as it streams.
func (c *Client) unpack(env *envelope.Envelope, payload io.Reader, staging string, write bool, keep string) ([]string, *x509.Certificate, error) {
	dr, err := cms.DecryptReader(bufio.NewReaderSize(payload, copyBuffer), c.id.EncCert, c.id.EncKey, maxOpen)
	if err != nil {
		return nil, nil, fmt.Errorf("decrypt: %w", err)
	}
	var src io.Reader = dr
	var kept *keptWriter
	if keep != "" {
		f, err := os.OpenFile(keep, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, nil, &localError{err}
		}
		kept = &keptWriter{f: f}
		defer kept.close()
		src = io.TeeReader(dr, kept)
	}
	decrypted := &failReader{r: src}
	vr, err := cms.NewVerifyReader(decrypted, c.participantPolicy(maxOpen))
	if err != nil {
		return nil, nil, openFailure(decrypted, err)
	}
	into := ""
	if write {
		into = filepath.Join(staging, stagedFiles)
		if err := os.Mkdir(into, 0o700); err != nil {
			return nil, nil, &localError{err}
		}
	}
	names, bundleErr := untar(vr, env.Files, into, env.PayloadSize)
	// Verify even after the bundle failed to match or to be written:
	// content that is not the sender's explains any fault in it, and a
	// full disk is no reason to fetch a forgery again.
	v, err := vr.Verify()
	if err != nil {
		return nil, nil, openFailure(decrypted, err)
	}
	if err := signedBy(v.Signer, env.From); err != nil {
		return nil, nil, fmt.Errorf("document signature: %w", err)
	}
	if errors.As(bundleErr, new(*localError)) {
		return nil, nil, bundleErr
	}
	if bundleErr != nil {
		return nil, nil, fmt.Errorf("bundle: %w", bundleErr)
	}
	if kept != nil {
		if err := kept.finish(dr); err != nil {
			return nil, nil, &localError{err}
		}
	}
	return names, v.Signer, nil
}

// keptWriter writes the decrypted SignedData to its file as it streams
// past (FetchOptions.KeepSealed).
type keptWriter struct {
	f   *os.File
	err error
}

func (k *keptWriter) Write(p []byte) (int, error) {
	if k.err == nil {
		_, k.err = k.f.Write(p)
	}
	return len(p), nil // a failed write is reported by finish, not as a fault of the message
}

// finish writes what is left of the decrypted stream (the verifier stops
// at the end of the SignedData, which is its end) and syncs the file.
func (k *keptWriter) finish(rest io.Reader) error {
	if k.err == nil {
		_, k.err = io.Copy(k.f, rest)
	}
	if k.err == nil {
		k.err = k.f.Sync()
	}
	if err := k.f.Close(); k.err == nil {
		k.err = err
	}
	k.f = nil
	return k.err
}

func (k *keptWriter) close() {
	if k.f != nil {
		k.f.Close()
	}
}

// openFailure names the layer at fault when the signed content could not
// be read or verified: decryption, if it failed underneath, otherwise the
// signature.
func openFailure(decrypted *failReader, err error) error {
	if decrypted.err != nil {
		return fmt.Errorf("decrypt: %w", decrypted.err)
	}
	return fmt.Errorf("document signature: %w", err)
}

// failReader reads r and keeps its first error other than io.EOF.
type failReader struct {
	r   io.Reader
	err error
}

func (f *failReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF && f.err == nil {
		f.err = err
	}
	return n, err
}

// ErrDocumentDigest is wrapped by the *OpenError of Fetch and Check when a
// document's SHA-256 differs from the one its (version 3) envelope lists:
// the sender signed other documents than those in the payload.
var ErrDocumentDigest = errors.New("a document differs from the one the envelope lists")

// maxTarTail bounds the zero bytes untar reads after the end of the tar
// file: Python's tarfile pads to records of 10240 bytes, other writers
// may use larger blocking factors.
const maxTarTail = 1 << 20

// untar writes the documents of the tar file read from bundle into the
// folder into (nowhere for ""), checking every entry against the
// envelope's manifest: only regular files, plain file names, exactly the
// manifest's names and sizes in its order, each document's SHA-256 where
// the manifest lists one (version 3), and no more than limit bytes in
// all. Each file is synced. Errors quote the sender's names bounded.
// After the end of the tar file only zero bytes may follow (its end
// blocks and padding, at most maxTarTail bytes), nothing hidden.
func untar(bundle io.Reader, manifest []envelope.File, into string, limit int64) ([]string, error) {
	tr := tar.NewReader(bundle)
	h := sha256.New()
	names := make([]string, 0, len(manifest))
	var total int64
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if i != len(manifest) {
				return nil, fmt.Errorf("holds %d files, the envelope lists %d", i, len(manifest))
			}
			if err := envelope.CheckTarEnd(bundle, maxTarTail); err != nil {
				return nil, err
			}
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		if i >= len(manifest) {
			return nil, fmt.Errorf("holds more files than the %d the envelope lists", len(manifest))
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("entry %d (%s) is not a regular file", i+1, envelope.Quote(hdr.Name))
		}
		if err := envelope.CheckFileName(hdr.Name); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		if want := manifest[i]; hdr.Name != want.Name || hdr.Size != want.Size {
			return nil, fmt.Errorf("entry %d is %s (%d bytes), the envelope lists %s (%d bytes)", i+1, envelope.Quote(hdr.Name), hdr.Size, envelope.Quote(want.Name), want.Size)
		}
		total += hdr.Size
		if hdr.Size < 0 || total > limit {
			return nil, fmt.Errorf("entry %d (%s) is larger than the bundle", i+1, envelope.Quote(hdr.Name))
		}
		h.Reset()
		src := io.TeeReader(tr, h)
		if into == "" {
			if _, err := io.CopyN(io.Discard, src, hdr.Size); err != nil {
				return nil, fmt.Errorf("entry %d (%s): %w", i+1, envelope.Quote(hdr.Name), err)
			}
		} else if err := writeFile(filepath.Join(into, hdr.Name), src, hdr.Size); err != nil {
			err = fmt.Errorf("entry %d (%s): %w", i+1, envelope.Quote(hdr.Name), err)
			if errors.As(err, new(*localError)) {
				// Keep the mark outermost, where unpack's caller looks.
				err = &localError{err}
			}
			return nil, err
		}
		// Version 3 envelopes list every document's digest; older ones
		// none, and their documents are bound by the payload's alone.
		if want := manifest[i].SHA256; want != "" {
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				return nil, fmt.Errorf("%w: entry %d (%s) has SHA-256 %s, the envelope lists %s", ErrDocumentDigest, i+1, envelope.Quote(hdr.Name), got, want)
			}
		}
		names = append(names, hdr.Name)
	}
}

// writeFile creates path (which must not exist) with exactly size bytes
// from r, and syncs it. A failure of the file system is a *localError; a
// failure to read r (a short bundle) is not.
func writeFile(path string, r io.Reader, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return &localError{err}
	}
	w := &fileWriter{f: f}
	if _, err := io.CopyN(w, r, size); err != nil {
		f.Close()
		if w.err != nil {
			return &localError{w.err}
		}
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return &localError{err}
	}
	if err := f.Close(); err != nil {
		return &localError{err}
	}
	return nil
}

// fileWriter writes to f and keeps its error, so that writeFile tells a
// failing disk from a failing read.
type fileWriter struct {
	f   *os.File
	err error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// checkTargets fails if any of files already exists in dir.
func checkTargets(dir string, files []envelope.File, keep bool) error {
	for _, f := range files {
		if keep && (strings.EqualFold(f.Name, SealedFile) || strings.EqualFold(f.Name, SignedFile)) {
			return fmt.Errorf("the message has a document named %s, the name of a kept original; fetch it without keeping the originals, or into a folder of its own", f.Name)
		}
		if err := absent(filepath.Join(dir, f.Name)); err != nil {
			return err
		}
	}
	if keep {
		for _, name := range []string{SealedFile, SignedFile} {
			if err := absent(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

func absent(path string) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return fmt.Errorf("%s already exists; nothing was written", path)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return err
	}
}

// commit moves the staged files names from staging into dir, refusing
// before moving anything if one of them exists there, and never replacing
// a file that appears meanwhile (a hard link fails where the target
// exists). On failure it removes what it had moved. It returns the new
// paths.
func commit(staging, dir string, names []string) ([]string, error) {
	for _, name := range names {
		if err := absent(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	var done []string
	undo := func(err error) ([]string, error) {
		for _, p := range done {
			os.Remove(p)
		}
		return nil, err
	}
	for _, name := range names {
		src, dst := filepath.Join(staging, name), filepath.Join(dir, name)
		err := os.Link(src, dst)
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrExist):
			return undo(fmt.Errorf("%s already exists; nothing was written", dst))
		default:
			// No hard links on this file system: rename after one more look.
			if err := absent(dst); err != nil {
				return undo(err)
			}
			if err := os.Rename(src, dst); err != nil {
				return undo(err)
			}
		}
		done = append(done, dst)
	}
	if err := syncDir(dir); err != nil {
		return undo(err)
	}
	return done, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// mkdirAll makes dir and any missing parents as os.MkdirAll does, and
// returns a function that removes the folders it made again, deepest
// first, as long as they are empty.
func mkdirAll(dir string, perm fs.FileMode) (undo func(), err error) {
	var made []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		made = append(made, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return nil, err
	}
	return func() {
		for _, p := range made {
			if os.Remove(p) != nil {
				return
			}
		}
	}, nil
}
