// Command send is the smallest complete program that uses Kurier's Go
// client: it sends one file to one recipient and prints the receipt.
// README.md shows it whole; a test keeps the two the same.
//
//	go run ./examples/send -id kurier-dev/identities/agency -node 127.0.0.1:7443 \
//	  -to eingang@amtsgericht.example -subject Klage brief.txt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err) // errors.Is(err, client.ErrNoMailbox), status.Code(err), … tell why
	}
}

func run() error {
	idDir := flag.String("id", "", "identity folder: cert.pem, key.pem, enc-cert.pem, enc-key.pem, ca.pem")
	node := flag.String("node", "127.0.0.1:7443", "the home node, host:port")
	to := flag.String("to", "", "the recipient's address")
	subject := flag.String("subject", "", "the subject")
	flag.Parse()
	if *idDir == "" || *to == "" || *subject == "" || flag.NArg() != 1 {
		return errors.New("usage: send -id DIR [-node HOST:PORT] -to ADDR -subject TEXT FILE")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	id, err := pki.LoadIdentity(*idDir)
	if err != nil {
		return err
	}
	c, err := client.Dial(ctx, *node, id)
	if err != nil {
		return err
	}
	defer c.Close()

	f, err := os.Open(flag.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	receipt, err := c.Send(ctx, client.Message{
		To:        []string{*to},
		Subject:   *subject,
		Documents: []client.Document{{Name: filepath.Base(f.Name()), Reader: f, Size: fi.Size()}},
	}, nil)
	if err != nil {
		return err
	}
	fmt.Println("sent", receipt.MessageID)
	for _, ev := range receipt.Evidence {
		fmt.Println("  evidence:", ev.Statement.Type, "by", ev.Statement.Issuer, "at", ev.Statement.Time.Format(time.RFC3339))
	}
	return nil
}
