// Package client is the Go library through which a participant (an agency,
// a court, or the municipal system working for one) uses its Kurier
// mailbox: send documents, list and watch the mailbox, fetch and open
// messages, acknowledge or reject them and collect the evidence.
//
// A Client talks to the participant's home node over mutual TLS with the
// participant's own identity (see pki.LoadIdentity). It trusts the node
// only as far as it must: every signature, certificate and evidence the
// node hands over is verified here against the federation's trust anchors
// (and the CA's CRL when given WithCRL) before it is used or returned.
//
// Sending seals the documents before they leave the process: they are
// bundled as a tar file, signed with the sender's key (CMS SignedData), and
// encrypted to every recipient's encryption certificate (CMS
// EnvelopedData), after checking that certificate against the trust
// anchors and the recipient's address. Fetching reverses this and refuses
// anything that does not check out, writing nothing in that case.
//
// Sealing, the transfer and opening stream, so memory use does not grow
// with a message: documents may be given as readers (Document.Reader), a
// sealed payload over 4 MiB waits for its submission in a temporary file
// (Sealed.Close removes it), and Fetch unpacks into a staging folder that
// it commits only once the sender's signature has verified. Messages are
// limited to MaxPayload.
//
// Example:
//
//	id, err := pki.LoadIdentity("/etc/kurier/poststelle")
//	if err != nil { … }
//	c, err := client.Dial(ctx, "kurier.stadt.example:7443", id, client.WithCRL("/etc/kurier/crl.pem"))
//	if err != nil { … }
//	defer c.Close()
//
//	r, err := c.Send(ctx, client.Message{
//		To:        []string{"eingang@amtsgericht.example"},
//		Subject:   "Klageerwiderung",
//		Reference: "3 C 123/26",
//		Documents: []client.Document{{Name: "erwiderung.pdf", Data: pdf}},
//	}, nil)
//	if err != nil { … }
//	fmt.Println("sent", r.MessageID)
//
// and on the court's side:
//
//	entries, err := c.Inbox(ctx)
//	…
//	f, err := c.Fetch(ctx, entries[0].ID, "/srv/eakte/eingang")
//	…
//	ack, err := c.Acknowledge(ctx, f)
//
// A message that cannot be opened (an *OpenError) cannot be acknowledged;
// the recipient refuses it instead, and the sender sees the refusal in its
// chain:
//
//	rej, err := c.Reject(ctx, id, evidence.CannotOpen, "does not decrypt with our key")
//
// The sender's outbox lists what it sent, newest first, with where each
// recipient's copy stands (acknowledged, rejected and why, …):
//
//	sent, err := c.Outbox(ctx, 20) // the newest 20; 0 for all
//	for _, r := range sent[0].Recipients { fmt.Println(r.Address, r.State, r.Reason) }
//
// Every method that talks to the node returns errors that carry the node's
// gRPC status: status.Code(err) gives its code. A refused submission is a
// *RejectedError carrying the node's signed SubmissionRejection.
package client
