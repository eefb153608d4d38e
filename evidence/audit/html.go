package audit

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
)

//go:embed report.html.tmpl
var templates embed.FS

var reportTemplate = template.Must(template.New("report.html.tmpl").Funcs(template.FuncMap{
	"stamp":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000 UTC") },
	"when":      func(t time.Time) string { return t.UTC().Format("02.01.2006 15:04:05 UTC") },
	"de":        func(s Status) string { return statusWords[s].DE },
	"en":        func(s Status) string { return statusWords[s].EN },
	"badge":     func(s Status) string { return valueWords[s].Badge },
	"badgeEN":   func(s Status) string { return valueWords[s].BadgeEN },
	"size":      humanSize,
	"plain":     envelope.Printable,
	"bytes":     groupDigits,
	"signer":    signerWords,
	"content":   func(s Status) string { return contentWords[s].DE },
	"contentEN": func(s Status) string { return contentWords[s].EN },
}).ParseFS(templates, "report.html.tmpl"))

// WriteHTML writes reports as one self-contained HTML page, modelled on the
// Prüfprotokoll of beA/EGVP, German first with English beside it: the
// verdict, and what failed in plain words, first; then the message, marked
// unverified where the sender's signature did not hold; the message's
// history as a timeline, one line per evidence; and every technical check,
// grouped, failed groups open. It holds no scripts and loads nothing, so
// it can be archived as it is, and its print styles fit it on A4.
func WriteHTML(w io.Writer, reports []*Report) error {
	p := page{Worst: Worst(reports), Made: time.Now().UTC(), Multi: len(reports) > 1}
	for i, r := range reports {
		p.Made = r.Verified
		p.Reports = append(p.Reports, viewOf(i, r))
	}
	p.Verdict = verdictWords[p.Worst]
	if err := reportTemplate.Execute(w, p); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// page is what the template renders.
type page struct {
	Reports []reportView
	Worst   Status
	Verdict struct{ Word, WordEN, Sentence, SentenceEN, Lead, LeadEN string }
	Made    time.Time
	// Multi is set for a page of several files, each then with a
	// heading and a verdict of its own.
	Multi bool
}

// reportView is one file's report as the page shows it.
type reportView struct {
	*Report
	N     int // its position, for element ids
	Worst Status
	// Findings are the checks that did not pass, in plain words: the
	// failed first, then the indeterminate.
	Findings []finding
	// Message says how far the message's values are established: Fail
	// where the sender's signature did not hold or the envelope is not
	// the one the evidence names (Report.MessageVerified); MessageWhy
	// says which, in German and English.
	Message    Status
	MessageWhy struct{ DE, EN string }
	// HasMessage is set when the envelope could be read.
	HasMessage bool
	// IDStatus marks the message id: Fail unless the message is verified
	// or a verified evidence signature names it; AnchorStatus the trust
	// anchor, as its check found it (Indeterminate when taken from the
	// file itself).
	IDStatus, AnchorStatus Status
	States                 []state
	Timeline               []event
	Groups                 []groupView
	Counts                 counts
}

// finding is one kind of check that did not pass, with what it was about.
type finding struct {
	Status         Status
	Title, TitleEN string
	Text, TextEN   string
	About          []string
	Group          string // the id of its group of technical checks
}

// state is where the message stands for one recipient.
type state struct {
	Recipient      string
	Words, WordsEN string
	Reason         string
	Status         Status
}

// event is one line of the timeline.
type event struct {
	Time         time.Time
	Text, TextEN string
	Signer       string
	Recipient    string
	Reason       string
	File         string
	Status       Status
	// Claimed is set for an evidence whose own signature, role or form
	// failed: nothing about it is established.
	Claimed bool
	// Failed names the checks of its file that did not pass.
	Failed []string
}

// groupView is one group of technical checks.
type groupView struct {
	ID       string
	Name, EN string
	Worst    Status
	Checks   []checkView
	Counts   counts
}

type counts struct{ Passed, Open, Failed int }

func (c *counts) add(s Status) {
	switch s {
	case Pass:
		c.Passed++
	case Indeterminate:
		c.Open++
	default:
		c.Failed++
	}
}

// checkView is one technical check with its name in words.
type checkView struct {
	Check
	Title, TitleEN string
}

// viewOf prepares report r, the n-th of the page, for the template: the
// findings in words, how far the message is established, the timeline,
// each recipient's state and the checks by group.
func viewOf(n int, r *Report) reportView {
	v := reportView{Report: r, N: n, Worst: r.Worst(), HasMessage: r.Sender != ""}
	types := map[string]string{}
	for _, s := range slices.Concat(r.Signatures, r.Claimed) {
		types[s.File] = s.What
	}
	v.Groups = groupChecks(n, r)
	v.Findings = findingsOf(r, types, v.Groups)
	for _, c := range r.Checks {
		v.Counts.add(c.Status)
	}
	v.Message = r.status(bundle.FileEnvelope, bundle.FileSignature)
	if !r.MessageVerified {
		v.Message = Fail
	}
	v.MessageWhy = messageWords[v.Message]
	if !r.MessageVerified && r.status(bundle.FileEnvelope, bundle.FileSignature) != Fail {
		v.MessageWhy = unboundWords // signed, but not the envelope the evidence names
	}
	v.Timeline = timelineOf(r)
	v.IDStatus, v.AnchorStatus = r.idStatus(), r.status()
	for _, c := range r.Chains {
		st := state{Recipient: c.Recipient, Reason: c.Reason, Status: r.status("chain for " + c.Recipient)}
		w, ok := stateWords[evidence.Type(c.State)]
		if !ok {
			w.DE, w.EN = c.State, c.State
		}
		st.Words, st.WordsEN = w.DE, w.EN
		if st.Recipient == "" {
			st.Recipient = "alle Empfänger" // a SubmissionRejection is about the whole submission
		}
		for _, e := range v.Timeline {
			if e.Recipient == c.Recipient {
				st.Status = worse(st.Status, e.Status)
			}
		}
		v.States = append(v.States, st)
	}
	return v
}

// idStatus says whether the message id is established: by the verified
// message, or by an evidence whose signature held and whose signer is not
// revoked — about that message where the bundle's envelope was read (no
// statement check failed); a single evidence file's id is its
// statement's.
func (r *Report) idStatus() Status {
	if r.MessageVerified {
		return Pass
	}
	if r.hasCheck(CheckStatement, Fail) {
		return Fail // an evidence may be about another message
	}
	for _, s := range r.Signatures {
		if evidence.Type(s.What).Valid() && s.Status != Fail {
			return Pass
		}
	}
	return Fail
}

// status returns how far what the files say is established: the worst of
// the checks made of them and of the trust anchor, on which every
// signature rests.
func (r *Report) status(files ...string) Status {
	s := Pass
	for _, c := range r.Checks {
		if c.Name == CheckTrustAnchor || slices.Contains(files, c.Subject) {
			s = worse(s, c.Status)
		}
	}
	return s
}

// failedTitles names the checks of file that did not pass, in words.
func (r *Report) failedTitles(file string) []string {
	var out []string
	for _, c := range r.Checks {
		if t := wordsOf(c.Name).Title; c.Subject == file && c.Status != Pass && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func worse(a, b Status) Status {
	rank := map[Status]int{Pass: 0, Indeterminate: 1, Fail: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// groupChecks sorts the checks into their groups, in the groups' order.
func groupChecks(n int, r *Report) []groupView {
	var out []groupView
	for i, g := range groups {
		gv := groupView{ID: fmt.Sprintf("checks-%d-%d", n, i), Name: g.DE, EN: g.EN, Worst: Pass}
		for _, c := range r.Checks {
			w := wordsOf(c.Name)
			if w.Group != g {
				continue
			}
			gv.Checks = append(gv.Checks, checkView{Check: c, Title: w.Title, TitleEN: w.TitleEN})
			gv.Worst = worse(gv.Worst, c.Status)
			gv.Counts.add(c.Status)
		}
		if len(gv.Checks) > 0 {
			out = append(out, gv)
		}
	}
	return out
}

// findingsOf puts the checks that did not pass into plain words, one
// finding per check name and outcome, naming what each was about.
func findingsOf(r *Report, types map[string]string, gs []groupView) []finding {
	var out []finding
	for _, s := range []Status{Fail, Indeterminate} {
		index := map[string]int{}
		for _, c := range r.Checks {
			if c.Status != s {
				continue
			}
			i, ok := index[c.Name]
			if !ok {
				w := wordsOf(c.Name)
				f := finding{Status: s, Title: w.Title, TitleEN: w.TitleEN, Text: w.Failed, TextEN: w.FailedEN}
				if s == Indeterminate {
					f.Text, f.TextEN = w.Open, w.OpenEN
					if f.Text == "" {
						f.Text, f.TextEN = genericOpen, genericOpenEN
					}
				}
				for _, g := range gs {
					if g.Name == w.Group.DE {
						f.Group = g.ID
					}
				}
				i = len(out)
				index[c.Name] = i
				out = append(out, f)
			}
			if about := subjectWords(c.Subject, types); about != "" && !slices.Contains(out[i].About, about) {
				out[i].About = append(out[i].About, about)
			}
		}
	}
	return out
}

// timelineOf turns the evidence signatures (and the bundle's index) into
// lines in plain words, in time order, each marked with how far it is
// established.
func timelineOf(r *Report) []event {
	var out []event
	for _, s := range r.Signatures {
		var e event
		switch {
		case s.What == "index":
			e.Text, e.TextEN = "Nachweispaket zusammengestellt und signiert", "Bundle export"
		case eventWords[evidence.Type(s.What)].Line != "":
			e.Text, e.TextEN = eventLine(s)
		default:
			continue // the envelope's and log keys' signatures are not events
		}
		e.Time, e.Signer, e.Recipient, e.Reason, e.File, e.Status = s.Time, s.Signer, s.Recipient, s.Reason, s.File, r.status(s.File)
		e.Failed = r.failedTitles(s.File)
		out = append(out, e)
	}
	for _, s := range r.Claimed {
		e := event{Time: s.Time, Signer: s.Signer, Recipient: s.Recipient, Reason: s.Reason, File: s.File, Status: Fail, Claimed: true}
		e.Text, e.TextEN = eventLine(s)
		e.Failed = r.failedTitles(s.File)
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b event) int { return a.Time.Compare(b.Time) })
	return out
}

// humanSize returns n bytes as a German reader expects it: "12,3 kB".
func humanSize(n int64) string {
	if n < 1000 {
		return groupDigits(n) + " Bytes"
	}
	units := []string{"kB", "MB", "GB", "TB"}
	f := float64(n)
	u := -1
	for f >= 1000 && u < len(units)-1 {
		f /= 1000
		u++
	}
	s := strconv.FormatFloat(f, 'f', 1, 64)
	return strings.Replace(s, ".", ",", 1) + " " + units[u]
}

// groupDigits writes n with dots between groups of three digits.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte('.')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
