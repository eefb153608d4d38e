package audit

import (
	"fmt"
	"strings"

	"kurier.dev/kurier/evidence"
)

// This file holds every plain-language wording of the HTML report, German
// first and English beside it, in one place, so that it can be reviewed
// (by a court's or an authority's compliance officer) without reading the
// code that lays out the page. The technical findings (Check.Detail) stay
// in English: they are for the person who has to find out what happened.

// group is a section of the report's technical checks.
type group struct{ DE, EN string }

// The groups, in the order the report shows them.
var (
	groupFormat   = group{"Format", "Format"}
	groupTrust    = group{"Vertrauensanker & Sperrliste", "Trust anchor & revocation"}
	groupEnvelope = group{"Umschlag", "Envelope"}
	groupEvidence = group{"Nachweise", "Evidence"}
	groupChain    = group{"Nachweiskette", "Evidence chain"}
	groupLog      = group{"Log/Merkle", "Log/Merkle"}
	groupContent  = group{"Dokumente", "Documents"}
	// groupOther takes the checks of a name words does not know; the
	// words test keeps it empty.
	groupOther = group{"Weitere Prüfungen", "Other checks"}
)

var groups = []group{groupFormat, groupTrust, groupEnvelope, groupEvidence, groupChain, groupLog, groupContent, groupOther}

// checkWords say what a check is about and, in plain words, what it means
// when it fails or cannot be decided.
type checkWords struct {
	Group group
	// Title names the check, as a heading.
	Title, TitleEN string
	// Failed says what failed and what that means for the reader.
	Failed, FailedEN string
	// Open says what an indeterminate outcome means; empty for checks that
	// are never indeterminate (genericOpen then stands in).
	Open, OpenEN string
}

// words has the wording of every check, by its Check* name. Every name
// must be here (TestReport_WordsForEveryCheck).
var words = map[string]checkWords{
	CheckFormat: {
		Group: groupFormat, Title: "Dateiformat", TitleEN: "File format",
		Failed:   "Die Datei ist kein lesbares Kurier-Nachweispaket: Sie ist beschädigt, unvollständig oder etwas anderes. Ihr Inhalt ließ sich nicht prüfen.",
		FailedEN: "The file is not a readable Kurier evidence bundle: damaged, incomplete or something else. Nothing in it could be checked.",
	},
	CheckTrustAnchor: {
		Group: groupTrust, Title: "Vertrauensanker (CA-Zertifikat der Föderation)", TitleEN: "Trust anchor (the federation's CA certificate)",
		Failed:   "Es gibt kein gültiges CA-Zertifikat, gegen das die Signaturen geprüft werden könnten: Keine Signatur ist belegt.",
		FailedEN: "There is no valid CA certificate to check the signatures against: no signature is established.",
		Open:     "Das CA-Zertifikat stammt aus der geprüften Datei selbst, nicht aus unabhängiger Quelle – jeder könnte es erstellt haben. Vergleichen Sie seinen Fingerabdruck mit dem veröffentlichten CA-Zertifikat der Föderation oder prüfen Sie erneut mit --ca.",
		OpenEN:   "The CA certificate comes from the file itself, not from an independent source, so anyone could have made it: compare its fingerprint with the federation's published one, or verify again with --ca.",
	},
	CheckCRL: {
		Group: groupTrust, Title: "Sperrliste (CRL)", TitleEN: "Certificate revocation list (CRL)",
		Failed:   "Die Sperrliste ist unbrauchbar (nicht von der CA ausgestellt oder beschädigt): Ob ein Zertifikat gesperrt war, lässt sich nicht ausschließen.",
		FailedEN: "The CRL is unusable (not the CA's, or damaged): revocation of a certificate cannot be ruled out.",
		Open:     "Es lag keine Sperrliste vor: Ob die Zertifikate der Unterzeichner gesperrt waren, wurde nicht geprüft.",
		OpenEN:   "No CRL was available: whether the signers' certificates were revoked was not checked.",
	},
	CheckRevocation: {
		Group: groupTrust, Title: "Sperrstatus des Unterzeichner-Zertifikats", TitleEN: "Revocation of the signer's certificate",
		Failed:   "Das Zertifikat eines Unterzeichners war zur Zeit der Signatur gesperrt, oder eine Sperrung lässt sich nicht ausschließen: Diese Signatur belegt nichts.",
		FailedEN: "A signer's certificate was revoked when it signed, or revocation cannot be ruled out: that signature proves nothing.",
		Open:     "Ob das Zertifikat eines Unterzeichners zur Zeit der Signatur gesperrt war, ließ sich nicht prüfen (keine oder eine damals schon veraltete Sperrliste).",
		OpenEN:   "Whether a signer's certificate was revoked at the time could not be checked (no CRL, or one already out of date then).",
	},
	CheckEnvelope: {
		Group: groupEnvelope, Title: "Umschlag (envelope.json)", TitleEN: "Envelope (envelope.json)",
		Failed:   "Der Umschlag ist unlesbar oder gehört zu einer anderen Nachricht: Absender, Empfänger, Betreff und Dokumente lassen sich nicht feststellen.",
		FailedEN: "The envelope cannot be read or is of another message: sender, recipients, subject and documents cannot be established.",
	},
	CheckEnvelopeSignature: {
		Group: groupEnvelope, Title: "Signatur des Absenders über den Umschlag", TitleEN: "The sender's signature over the envelope",
		Failed:   "Der Umschlag wurde nach der Signatur des Absenders verändert, oder er ist nicht vom Absender signiert: Absender, Empfänger, Betreff und Dokumente sind nicht bestätigt.",
		FailedEN: "The envelope was changed after the sender signed it, or the sender did not sign it: sender, recipients, subject and documents are not confirmed.",
	},
	CheckEvidenceSignature: {
		Group: groupEvidence, Title: "Signatur des Nachweises", TitleEN: "Signature of the evidence",
		Failed:   "Ein Nachweis wurde nach seiner Signatur verändert, oder seine Signatur ist ungültig: Was er bezeugt, ist nicht belegt.",
		FailedEN: "An evidence was changed after it was signed, or its signature is invalid: what it attests is not established.",
	},
	CheckSignerRole: {
		Group: groupEvidence, Title: "Befugnis des Unterzeichners", TitleEN: "The signer's role",
		Failed:   "Ein Nachweis ist von jemandem signiert, der ihn nicht ausstellen darf (etwa vom Absender statt vom Knoten): Er belegt nichts.",
		FailedEN: "An evidence is signed by someone who may not issue it (the sender instead of a node, say): it proves nothing.",
	},
	CheckStatement: {
		Group: groupEvidence, Title: "Inhalt des Nachweises", TitleEN: "The evidence's statement",
		Failed:   "Ein Nachweis ist fehlerhaft oder betrifft eine andere Nachricht, einen anderen Absender oder Empfänger als diesen Umschlag.",
		FailedEN: "An evidence is malformed, or is about another message, sender or recipient than this envelope's.",
	},
	CheckEnvelopeDigest: {
		Group: groupEvidence, Title: "Bezug des Nachweises auf den Umschlag", TitleEN: "The evidence names this envelope",
		Failed:   "Ein Nachweis bezieht sich auf einen anderen Umschlag als den in dieser Datei: Der Umschlag wurde verändert oder ausgetauscht, nachdem der Knoten den Nachweis ausgestellt hat.",
		FailedEN: "An evidence is about another envelope than the one in this file: the envelope was changed or replaced after the node issued the evidence.",
	},
	CheckPayloadDigest: {
		Group: groupEvidence, Title: "Bezug des Nachweises auf den Inhalt", TitleEN: "The evidence names this content",
		Failed:   "Ein Nachweis nennt eine andere Prüfsumme des verschlüsselten Inhalts, als der Absender im Umschlag signiert hat: Nachweis und Nachricht gehören nicht zusammen.",
		FailedEN: "An evidence names another digest of the sealed content than the sender signed in the envelope: evidence and message do not belong together.",
	},
	CheckContentSignature: {
		Group: groupContent, Title: "Signatur des Absenders über die Dokumente (content/signed.p7m)", TitleEN: "The sender's signature over the documents (content/signed.p7m)",
		Failed:   "Die beigefügten Dokumente tragen keine gültige Signatur des Absenders: Sie können nach dem Versand verändert oder von jemand anderem erstellt worden sein. Sie belegen nicht, was zugestellt wurde.",
		FailedEN: "The enclosed documents carry no valid signature of the sender: they may have been changed after sending or made by someone else. They do not prove what was delivered.",
	},
	CheckDocument: {
		Group: groupContent, Title: "Dokument gegen die Prüfsumme im Umschlag", TitleEN: "Document against the digest in the envelope",
		Failed:   "Ein beigefügtes Dokument stimmt nicht mit dem überein, was der Absender im Umschlag angekündigt hat (Name, Größe oder SHA-256), oder es fehlt oder ist überzählig: Es ist nicht das zugestellte Dokument.",
		FailedEN: "An enclosed document does not match what the sender announced in the envelope (name, size or SHA-256), or one is missing or extra: it is not the document delivered.",
		Open:     "Der Umschlag dieser Nachricht stammt aus einer älteren Version und nennt keine Prüfsummen der Dokumente: Die beigefügten Dokumente sind vom Absender signiert, aber nichts verbindet sie mit den Nachweisen.",
		OpenEN:   "This message's envelope is of an older version and lists no document digests: the enclosed documents are signed by the sender, but nothing binds them to the evidence.",
	},
	CheckSealedPayload: {
		Group: groupContent, Title: "Verschlüsselter Inhalt wie zugestellt (content/payload.p7m)", TitleEN: "Sealed payload as delivered (content/payload.p7m)",
		Failed:   "Der beigefügte verschlüsselte Inhalt hat eine andere Größe oder Prüfsumme als im Umschlag und in den Nachweisen genannt: Es ist nicht der zugestellte Inhalt.",
		FailedEN: "The enclosed sealed payload has another size or digest than the envelope and the evidence name: it is not the payload delivered.",
	},
	CheckChain: {
		Group: groupChain, Title: "Nachweiskette je Empfänger", TitleEN: "Evidence chain per recipient",
		Failed:   "Die Nachweise eines Empfängers bilden keine lückenlose Kette: Ein Nachweis fehlt, ist vertauscht oder eingeschoben. Der Verlauf ist nicht vollständig belegt.",
		FailedEN: "A recipient's evidence does not form an unbroken chain: one is missing, out of order or inserted. The history is not fully established.",
	},
	CheckIndexSignature: {
		Group: groupLog, Title: "Signatur des Verzeichnisses (index.p7m)", TitleEN: "Signature of the index (index.p7m)",
		Failed:   "Das Verzeichnis, mit dem der Knoten die Nachweise des Pakets auflistet, ist verändert oder nicht vom Knoten signiert: Vollständigkeit und Log-Einträge sind nicht belegt.",
		FailedEN: "The index in which the node lists the bundle's evidence was changed or is not signed by the node: completeness and log entries are not established.",
	},
	CheckIndex: {
		Group: groupLog, Title: "Vollständigkeit des Pakets", TitleEN: "Completeness of the bundle",
		Failed:   "Das Paket enthält nicht genau die Nachweise, die der Knoten aufgelistet hat: Ein Nachweis fehlt, wurde hinzugefügt, verändert oder umsortiert.",
		FailedEN: "The bundle does not hold exactly the evidence the node listed: one is missing, added, changed or reordered.",
	},
	CheckCheckpoint: {
		Group: groupLog, Title: "Signierter Stand des Nachweis-Logs (Checkpoint)", TitleEN: "Signed checkpoint of the evidence log",
		Failed:   "Der signierte Stand des Nachweis-Logs ist ungültig oder passt nicht zum Verzeichnis: Dass die Nachweise im Log des Knotens stehen, ist nicht belegt.",
		FailedEN: "The signed checkpoint of the evidence log is invalid or does not match the index: that the evidence is in the node's log is not established.",
		Open:     "Der Log-Stand ist nur durch das Zertifikat des Knotens belegt, nicht durch einen unabhängig bekannten Log-Schlüssel: Geben Sie den veröffentlichten Schlüssel (log.vkey) mit --log-key an.",
		OpenEN:   "The checkpoint rests on the node's certificate alone, not on a log key known independently: pass the published log.vkey with --log-key.",
	},
	CheckLogKey: {
		Group: groupLog, Title: "Log-Schlüssel eines anderen Knotens", TitleEN: "Another node's log key",
		Failed:   "Der Schlüssel des Logs eines anderen beteiligten Knotens ist nicht von diesem Knoten bestätigt: Die Einträge in dessen Log sind nicht belegt.",
		FailedEN: "The log key of another node involved is not vouched for by that node: the entries in its log are not established.",
	},
	CheckInclusion: {
		Group: groupLog, Title: "Eintrag im Log (Merkle-Beweis)", TitleEN: "Entry in the log (Merkle proof)",
		Failed:   "Ein Nachweis steht nicht nachweisbar im Log des Knotens: Er könnte nachträglich erstellt oder verändert worden sein.",
		FailedEN: "An evidence is not provably in the node's log: it may have been made or changed afterwards.",
	},
	CheckConsistency: {
		Group: groupLog, Title: "Fortschreibung des Logs", TitleEN: "Consistency of the log",
		Failed:   "Das Log des Knotens setzt den früher gesicherten Stand nicht fort: Einträge wurden seither verändert oder entfernt, oder das Paket belegt die Fortschreibung nicht.",
		FailedEN: "The node's log does not extend the checkpoint kept earlier: entries were changed or removed since, or the bundle does not prove it.",
		Open:     "Der angegebene frühere Log-Stand ist neuer als der des Pakets: Die Fortschreibung lässt sich mit diesem Paket nicht prüfen.",
		OpenEN:   "The checkpoint given is newer than the bundle's: this bundle cannot prove the log extends it.",
	},
	CheckOlderCheckpoint: {
		Group: groupLog, Title: "Früher gesicherter Log-Stand", TitleEN: "Checkpoint kept earlier",
		Failed:   "Der angegebene frühere Log-Stand ist ungültig oder gehört nicht zum Log dieses Pakets.",
		FailedEN: "The checkpoint given is invalid or not of this bundle's log.",
	},
}

// genericOpen stands in for a check without words of its own for an
// indeterminate outcome.
const (
	genericOpen   = "Diese Prüfung war nicht entscheidbar: Nichts spricht dagegen, es ließ sich aber auch nicht belegen."
	genericOpenEN = "This check could not be decided: nothing contradicts it, but it could not be established either."
)

// wordsOf returns the wording of check name, with a stand-in for a name
// words lacks (so that a report still renders).
func wordsOf(name string) checkWords {
	if w, ok := words[name]; ok {
		return w
	}
	return checkWords{Group: groupOther, Title: name, TitleEN: name,
		Failed: "Diese Prüfung ist nicht bestanden.", FailedEN: "This check failed."}
}

// statusWords name the outcomes.
var statusWords = map[Status]struct{ DE, EN string }{
	Pass:          {"bestanden", "passed"},
	Indeterminate: {"nicht entscheidbar", "indeterminate"},
	Fail:          {"nicht bestanden", "failed"},
}

// verdictWords are the report's headline and the sentence under it; Lead
// introduces the list of what did not pass, on a page of one file.
var verdictWords = map[Status]struct{ Word, WordEN, Sentence, SentenceEN, Lead, LeadEN string }{
	Pass: {"Bestanden", "Passed",
		"Alle Prüfungen bestanden: Umschlag und Nachweise sind unverändert, von den genannten Stellen signiert und im Log des Knotens verzeichnet.",
		"Every check passed: envelope and evidence are unchanged, signed by those named, and in the node's log.", "", ""},
	Indeterminate: {"Nicht entscheidbar", "Indeterminate",
		"Nicht alle Prüfungen entscheidbar: Nichts spricht gegen die Nachweise, aber nicht alles ließ sich belegen.",
		"Not every check could be established: nothing contradicts the evidence, but not all of it is proven.",
		"Was offen ist:", "What is open:"},
	Fail: {"Nicht bestanden", "Failed",
		"Nicht alle Prüfungen bestanden.", "Not every check passed.",
		"Was nicht stimmt:", "What is wrong:"},
}

// valueWords mark, beside the message's values and on each timeline
// line, how far a value is established.
var valueWords = map[Status]struct{ Badge, BadgeEN string }{
	Pass:          {"geprüft", "verified"},
	Indeterminate: {"nicht abschließend geprüft", "not fully established"},
	Fail:          {"nicht verifiziert", "unverified"},
}

// messageWords say, above the message's values, why they are not
// established.
var messageWords = map[Status]struct{ DE, EN string }{
	Indeterminate: {"Der Absender hat diese Angaben signiert, aber nicht jede Prüfung war entscheidbar (siehe oben).",
		"The sender signed these values, but not every check could be decided (see above)."},
	Fail: {"Die Signatur des Absenders über den Umschlag hält nicht (siehe oben). Absender, Empfänger, Betreff und Dokumente stehen so in der Datei, sind aber nicht vom Absender bestätigt und können verändert sein.",
		"The sender's signature over the envelope does not hold (see above). Sender, recipients, subject and documents are what the file says, not confirmed by the sender, and may have been changed."},
}

// unboundWords say, above the message's values, why they are not
// established although the sender's signature over the envelope held:
// the envelope is not the one the evidence names (a second envelope of
// the same id, which no node accepted).
var unboundWords = struct{ DE, EN string }{
	"Der Absender hat diesen Umschlag signiert, aber er ist nicht der, den die geprüften Nachweise nennen (siehe oben). Absender, Empfänger, Betreff und Dokumente stehen so in der Datei, sind aber nicht als die der zugestellten Nachricht bestätigt.",
	"The sender signed this envelope, but it is not the one the verified evidence names (see above). Sender, recipients, subject and documents are what the file says, not confirmed as those of the message delivered.",
}

// contentWords say whether a document itself was checked against what
// the envelope lists (Document.Content); "" where the bundle does not
// carry it.
var contentWords = map[Status]struct{ DE, EN string }{
	"":            {"nicht im Paket enthalten; Angaben laut Umschlag", "not in the bundle; as the envelope lists it"},
	Pass:          {"Dokument selbst geprüft: stimmt mit dem Umschlag überein", "the document itself matches the envelope"},
	Indeterminate: {"Dokument selbst nicht abschließend geprüft", "the document itself could not be fully checked"},
	Fail:          {"NICHT BESTANDEN: Das Dokument stimmt nicht mit dem Umschlag überein", "FAILED: the document does not match the envelope"},
}

// eventWords name each evidence type in German, with English beside it,
// and say what it attests as a timeline line: who did what. In Line, %[1]s
// is the node that attests it (or, for the recipient's own evidence, the
// recipient), %[2]s the recipient.
var eventWords = map[evidence.Type]struct{ Name, Line, EN string }{
	evidence.SubmissionAcceptance: {"Eingangsbestätigung", "Eingang beim Knoten %[1]s bestätigt, Nachricht für %[2]s angenommen", "Submission Acceptance"},
	evidence.SubmissionRejection:  {"Ablehnung der Einreichung", "Einreichung vom Knoten %[1]s abgelehnt", "Submission Rejection"},
	evidence.RelayAcceptance:      {"Weiterleitungsbestätigung", "Zur Weiterleitung an %[2]s vom Knoten %[1]s übernommen", "Relay Acceptance"},
	evidence.RelayRejection:       {"Ablehnung der Weiterleitung", "Weiterleitung an %[2]s vom Knoten %[1]s abgelehnt", "Relay Rejection"},
	evidence.Delivery:             {"Zustellnachweis", "In das Postfach von %[2]s zugestellt (Knoten %[1]s)", "Delivery"},
	evidence.Retrieval:            {"Abrufnachweis", "Von %[2]s abgerufen (Knoten %[1]s)", "Retrieval"},
	evidence.Acknowledgement:      {"Empfangsbekenntnis (eEB)", "Empfang von %[2]s bestätigt (elektronisches Empfangsbekenntnis, eEB)", "Acknowledgement"},
	evidence.Rejection:            {"Zurückweisung", "Von %[2]s zurückgewiesen (Zurückweisung statt eEB)", "Rejection"},
	evidence.NonDelivery:          {"Unzustellbarkeitsnachweis", "Nicht zustellbar an %[2]s (festgestellt vom Knoten %[1]s)", "Non-Delivery"},
}

// stateWords name where a message stands for a recipient: its chain's
// last evidence type.
var stateWords = map[evidence.Type]struct{ DE, EN string }{
	evidence.SubmissionAcceptance: {"eingereicht, noch nicht zugestellt", "submitted, not yet delivered"},
	evidence.SubmissionRejection:  {"Einreichung abgelehnt", "submission rejected"},
	evidence.RelayAcceptance:      {"unterwegs zum Knoten des Empfängers", "on its way to the recipient's node"},
	evidence.RelayRejection:       {"Weiterleitung abgelehnt", "relay rejected"},
	evidence.Delivery:             {"zugestellt, noch nicht abgerufen", "delivered, not yet retrieved"},
	evidence.Retrieval:            {"abgerufen, Empfang noch nicht bestätigt", "retrieved, not yet acknowledged"},
	evidence.Acknowledgement:      {"Empfang bestätigt (eEB abgegeben)", "acknowledged"},
	evidence.Rejection:            {"zurückgewiesen", "refused by the recipient"},
	evidence.NonDelivery:          {"nicht zustellbar", "not delivered"},
}

// eventLine returns the timeline words of an evidence signature.
func eventLine(s Signature) (de, en string) {
	w, ok := eventWords[evidence.Type(s.What)]
	if !ok {
		return s.What, s.What
	}
	node, rcpt := s.Node, s.Recipient
	if node == "" {
		node = "?"
	}
	if rcpt == "" {
		rcpt = "alle Empfänger"
	}
	return fmt.Sprintf(w.Line, node, rcpt), w.EN
}

// signerWords puts describe's "node …" and "participant …" into German.
func signerWords(signer string) string {
	switch {
	case strings.HasPrefix(signer, "node "):
		return "Knoten " + strings.ReplaceAll(strings.TrimPrefix(signer, "node "), ",", ", ")
	case strings.HasPrefix(signer, "participant "):
		return "Teilnehmer " + strings.TrimPrefix(signer, "participant ")
	}
	return signer
}

// subjectWords names what a check was applied to, in words, keeping the
// file name for whoever looks it up; types gives the evidence type of each
// evidence file as far as known.
func subjectWords(subject string, types map[string]string) string {
	switch {
	case subject == "":
		return ""
	case subject == "envelope.json":
		return "Umschlag (envelope.json)"
	case subject == "envelope.p7s":
		return "Signatur des Absenders (envelope.p7s)"
	case subject == "index.p7m":
		return "Verzeichnis des Knotens (index.p7m)"
	case strings.HasPrefix(subject, "chain for "):
		return "Nachweiskette für " + strings.TrimPrefix(subject, "chain for ")
	case strings.HasPrefix(subject, "rejection "):
		return "Ablehnung der Einreichung (" + strings.TrimPrefix(subject, "rejection ") + ")"
	case strings.HasPrefix(subject, "evidence/"):
		if t, ok := types[subject]; ok {
			if w, ok := eventWords[evidence.Type(t)]; ok {
				return w.Name + " (" + subject + ")"
			}
		}
		return "Nachweis " + subject
	}
	return subject
}
