package evidence

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"kurier.dev/kurier/envelope"
)

// RejectionCode says in one word why a recipient refuses a message. It
// starts a Rejection's reason, so that software on the sender's side can
// act on it without reading the text.
type RejectionCode string

// The rejection codes.
const (
	// CannotOpen: the recipient could not decrypt or verify the content
	// (not encrypted to it, damaged, signed by someone else, not the
	// documents the envelope lists).
	CannotOpen RejectionCode = "cannot-open"
	// NotCompetent: the recipient is not the authority for the matter.
	NotCompetent RejectionCode = "not-competent"
	// OtherRejection: any other reason, which the text must give.
	OtherRejection RejectionCode = "other"
)

// RejectionCodes lists every rejection code.
var RejectionCodes = []RejectionCode{CannotOpen, NotCompetent, OtherRejection}

// MaxRejectionText bounds the recipient's text in a Rejection's reason.
const MaxRejectionText = 512

// RejectionReason returns the reason of a Rejection: the code, then, if
// text is not empty, ": " and the text. It refuses an unknown code, the
// code "other" without text, and text that is longer than
// MaxRejectionText, not UTF-8, or holds a character that would make it
// show a person something else than it says (envelope.Hostile): the
// sender's software shows it to a person.
func RejectionReason(code RejectionCode, text string) (string, error) {
	if err := checkRejection(code, text); err != nil {
		return "", err
	}
	if text == "" {
		return string(code), nil
	}
	return string(code) + ": " + text, nil
}

// ParseRejectionReason splits a Rejection's reason into its code and text
// and checks both as RejectionReason does.
func ParseRejectionReason(reason string) (RejectionCode, string, error) {
	code, text, found := strings.Cut(reason, ": ")
	if found && text == "" {
		return "", "", fmt.Errorf("%w: rejection reason %q ends after the code", ErrInvalid, truncateText(reason))
	}
	if err := checkRejection(RejectionCode(code), text); err != nil {
		return "", "", err
	}
	return RejectionCode(code), text, nil
}

func checkRejection(code RejectionCode, text string) error {
	known := false
	for _, c := range RejectionCodes {
		known = known || c == code
	}
	switch {
	case !known:
		return fmt.Errorf("%w: rejection code %q is not one of %s", ErrInvalid, truncateText(string(code)), codeList())
	case len(text) > MaxRejectionText:
		return fmt.Errorf("%w: rejection text of %d bytes, at most %d", ErrInvalid, len(text), MaxRejectionText)
	case !utf8.ValidString(text):
		return fmt.Errorf("%w: rejection text is not UTF-8", ErrInvalid)
	case code == OtherRejection && strings.TrimSpace(text) == "":
		return fmt.Errorf("%w: a rejection with code %s needs a text saying why", ErrInvalid, OtherRejection)
	case text != "" && strings.TrimSpace(text) != text:
		return fmt.Errorf("%w: rejection text starts or ends with white space", ErrInvalid)
	}
	for _, r := range text {
		if envelope.Hostile(r) {
			return fmt.Errorf("%w: rejection text contains U+%04X, a control or bidirectional character that would show the reader something else than it says", ErrInvalid, r)
		}
	}
	return nil
}

func codeList() string {
	s := make([]string, len(RejectionCodes))
	for i, c := range RejectionCodes {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// truncateText shortens s for an error message, so that errors never echo
// unbounded input.
func truncateText(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	for i := n; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}
