// The page of Kurier's browser verifier. It starts the verifier (Go
// compiled to WebAssembly, carried gzipped and base64-encoded in
// verifier.js, so loading it needs no fetch), reads the files the person
// chooses or drops with File.arrayBuffer, and shows the verdict and the
// Prüfprotokoll in a sandboxed frame. It makes no request of its own, and
// the page's Content-Security-Policy refuses any a script could make
// while staying on the page (no connect-src, no images but data:, …).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const files = { bundle: null, ca: null, crl: null };
  let reportURL = null;
  let ready = false;

  // Violations of the page's policy go to the console as errors, where
  // the person (and the browser test) sees what was refused.
  document.addEventListener("securitypolicyviolation", (e) => {
    console.error("Content-Security-Policy refused " + e.blockedURI + " (" + e.effectiveDirective + ")");
  });

  function setStatus(state, de, en) {
    const s = $("status");
    s.dataset.state = state;
    s.textContent = de + " ";
    const span = document.createElement("span");
    span.lang = "en";
    span.textContent = "/ " + en;
    s.append(span);
  }

  function showError(message) {
    const e = $("error");
    e.textContent = "Prüfung nicht möglich / cannot verify: " + message;
    e.hidden = false;
  }

  function clearResult() {
    $("error").hidden = true;
    $("verdict").hidden = true;
    $("actions").hidden = true;
    $("report").hidden = true;
    $("report").removeAttribute("srcdoc");
    delete $("report").dataset.loaded;
    if (reportURL) {
      URL.revokeObjectURL(reportURL);
      reportURL = null;
    }
  }

  function base64Bytes(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) {
      out[i] = bin.charCodeAt(i);
    }
    return out;
  }

  async function start() {
    const gz = base64Bytes(globalThis.kurierVerifierGzip);
    delete globalThis.kurierVerifierGzip;
    const wasm = await new Response(new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
    const go = new Go();
    const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
    // run returns once the verifier's main waits; kurierVerify is set by then.
    go.run(instance).then(() => setStatus("failed", "Das Prüfprogramm wurde beendet; Seite neu laden.", "the verifier stopped; reload the page."));
    if (typeof globalThis.kurierVerify !== "function") {
      throw new Error("the verifier did not start");
    }
  }

  // derKind tells a DER certificate from a DER CRL (both a SEQUENCE
  // first) by what opens the signed part inside: a certificate's
  // TBSCertificate starts with its [0] version (0xA0), a CRL's TBSCertList
  // with its INTEGER version (0x02) or, for a v1 CRL, the signature's
  // AlgorithmIdentifier (a SEQUENCE, 0x30). Anything else (a .p7m's
  // ContentInfo opens with an OID) is neither.
  function derKind(b) {
    let i = 0;
    for (let n = 0; n < 2; n++) {
      if (b[i] !== 0x30 || i + 1 >= b.length) return null;
      const len = b[i + 1];
      i += 2 + (len & 0x80 ? len & 0x7f : 0);
    }
    if (b[i] === 0xa0) return "ca";
    if (b[i] === 0x02 || b[i] === 0x30) return "crl";
    return null;
  }

  // role tells which input a dropped file belongs to, by its content
  // first: a zip is the bundle, a certificate (PEM or DER) the CA, a CRL
  // (PEM or DER) the CRL; else a .crl is the CRL, and anything else (a
  // .p7m) the bundle.
  async function role(file) {
    const b = new Uint8Array(await file.slice(0, 64).arrayBuffer());
    const head = new TextDecoder("latin1").decode(b);
    if (head.startsWith("PK\x03\x04")) return "bundle";
    if (head.includes("-----BEGIN CERTIFICATE")) return "ca";
    if (head.includes("-----BEGIN X509 CRL")) return "crl";
    const kind = derKind(b);
    if (kind) return kind;
    if (/\.crl$/i.test(file.name)) return "crl";
    return "bundle";
  }

  // choose takes a dropped file as the input's own, so the input names it.
  function choose(which, file) {
    files[which] = file;
    const dt = new DataTransfer();
    dt.items.add(file);
    $(which).files = dt.files;
  }

  async function bytes(which, file) {
    const limit = globalThis.kurierLimits[which];
    if (file.size > limit) {
      throw new Error(file.name + " has " + file.size + " bytes, more than " + limit + ": is it the right file?");
    }
    return new Uint8Array(await file.arrayBuffer());
  }

  // gen counts the runs of verify. Runs overlap (a new file may be chosen
  // while an earlier one is still being read), so each run works on its
  // own copy of the chosen files and shows nothing once a later run has
  // begun: the verdict on the page is always that of the files chosen last.
  let gen = 0;

  async function verify(run) {
    const chosen = { bundle: files.bundle, ca: files.ca, crl: files.crl };
    clearResult();
    if (!ready || !chosen.bundle) return;
    if (!chosen.ca) {
      showError("Bitte auch das CA-Zertifikat (ca.pem) wählen. / Choose the CA certificate (ca.pem) too.");
      return;
    }
    const bundle = await bytes("bundle", chosen.bundle);
    if (run !== gen) return;
    const ca = await bytes("ca", chosen.ca);
    if (run !== gen) return;
    const crl = chosen.crl ? await bytes("crl", chosen.crl) : null;
    if (run !== gen) return;
    const res = globalThis.kurierVerify(bundle, chosen.bundle.name, ca, crl);
    if (res.error) {
      showError(res.error);
      return;
    }
    const v = $("verdict");
    v.dataset.verdict = res.verdict;
    v.textContent = {
      passed: "Alle Prüfungen bestanden / every check passed",
      indeterminate: "Nicht alle Prüfungen entscheidbar / not every check could be established",
      failed: "Nicht alle Prüfungen bestanden / not every check passed",
    }[res.verdict] + " — " + chosen.bundle.name;
    v.hidden = false;
    const frame = $("report");
    frame.srcdoc = res.html;
    frame.hidden = false;
    reportURL = URL.createObjectURL(new Blob([res.html], { type: "text/html" }));
    $("save").href = reportURL;
    $("actions").hidden = false;
  }

  function run() {
    const r = ++gen;
    verify(r).catch((e) => {
      if (r === gen) showError(e.message);
    });
  }

  // data-loaded marks a report the frame shows in full.
  $("report").addEventListener("load", (e) => {
    if (e.target.srcdoc) e.target.dataset.loaded = "true";
  });

  for (const which of ["bundle", "ca", "crl"]) {
    $(which).addEventListener("change", (e) => {
      files[which] = e.target.files[0] || null;
      run();
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    for (const file of e.dataTransfer.files) {
      choose(await role(file), file);
    }
    run();
  });
  // A file dropped beside the zone must not make the browser leave the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  start().then(
    () => {
      ready = true;
      setStatus("ready", "Bereit.", "ready.");
      run(); // files chosen while it loaded
    },
    (e) => setStatus("failed", "Das Prüfprogramm startet nicht: " + e.message, "the verifier does not start."),
  );
})();
