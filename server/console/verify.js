// Agent Ledger console: the checks the page makes itself, with Web Crypto
// (SHA-256, Ed25519) and nothing the server says taken on trust.
//
// - verifier keys (C2SP signed-note vkey), signed notes and checkpoints
//   (C2SP tlog-checkpoint);
// - RFC 9162 inclusion and consistency proofs;
// - the stored LedgerEntry bytes, decoded here from protobuf, so that what
//   the page shows is what the proofs cover;
// - payload commitments, SHA-256(salt || payload).
"use strict";

const LedgerVerify = (() => {
  const enc = new TextEncoder();
  const dec = new TextDecoder("utf-8", { fatal: true });

  function b64decode(s) {
    if (typeof s !== "string") throw new Error("not base64 text");
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function b64encode(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function concat(...parts) {
    const n = parts.reduce((a, p) => a + p.length, 0);
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
    return d === 0;
  }

  function available() {
    return typeof crypto !== "undefined" && crypto.subtle !== undefined;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const LEAF = new Uint8Array([0]);
  const NODE = new Uint8Array([1]);
  const leafHash = (entry) => sha256(concat(LEAF, entry));
  const nodeHash = (l, r) => sha256(concat(NODE, l, r));

  // --- keys, notes, checkpoints ---------------------------------------------

  // `<name>+<8 hex key id>+<base64(0x01 || 32-byte Ed25519 key)>`.
  async function parseVerifierKey(text) {
    const s = (text || "").trim();
    // The name holds no "+"; the base64 key may.
    const i = s.indexOf("+");
    const j = i < 0 ? -1 : s.indexOf("+", i + 1);
    if (i < 0 || j < 0) throw new Error("a verifier key is <name>+<key id>+<key>");
    const name = s.slice(0, i);
    const id = s.slice(i + 1, j);
    const b64 = s.slice(j + 1);
    if (!name || /\s/.test(name)) throw new Error("the key's name is empty or has spaces");
    if (!/^[0-9a-f]{8}$/.test(id)) throw new Error("the key id is not 8 hex digits");
    let raw;
    try {
      raw = b64decode(b64);
    } catch (e) {
      throw new Error("the key is not base64");
    }
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("not an Ed25519 key (type 0x01, 32 bytes)");
    const pub = raw.slice(1);
    const want = (await sha256(concat(enc.encode(name + "\n"), raw))).slice(0, 4);
    if (hex(want) !== id) throw new Error("the key id does not match the key");
    const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    return { text: s, name, id: want, key };
  }

  // Opens a signed note with `vkey`: its text must carry a valid signature
  // line by that key; lines by other keys are ignored. Returns the body.
  async function openNote(note, vkey) {
    if (typeof note !== "string" || !note.endsWith("\n")) throw new Error("the note does not end in a newline");
    const split = note.indexOf("\n\n");
    if (split < 0) throw new Error("the note has no signature block");
    const body = note.slice(0, split + 1);
    const lines = note.slice(split + 2, -1).split("\n");
    let found = false;
    for (const line of lines) {
      if (!line.startsWith("\u2014 ")) throw new Error("malformed signature line");
      const rest = line.slice(2);
      const sp = rest.lastIndexOf(" ");
      if (sp < 0) throw new Error("malformed signature line");
      const name = rest.slice(0, sp);
      let sig;
      try {
        sig = b64decode(rest.slice(sp + 1));
      } catch (e) {
        throw new Error("signature is not base64");
      }
      if (name !== vkey.name || sig.length < 4 || !equal(sig.slice(0, 4), vkey.id)) continue;
      if (sig.length !== 68) throw new Error("an Ed25519 signature line of the wrong length");
      const ok = await crypto.subtle.verify({ name: "Ed25519" }, vkey.key, sig.slice(4), enc.encode(body));
      if (!ok) throw new Error("the signature by " + vkey.name + " does not verify");
      found = true;
    }
    if (!found) throw new Error("no signature by the pinned key " + vkey.name);
    return body;
  }

  // A checkpoint signed by `vkey`, or an exception saying why not.
  async function openCheckpoint(note, vkey) {
    const body = await openNote(note, vkey);
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3) throw new Error("a checkpoint has an origin, a size and a root");
    const [origin, sizeText, rootText] = lines;
    if (origin !== vkey.name) throw new Error("the checkpoint's origin " + origin + " is not the key's name " + vkey.name);
    if (!/^(0|[1-9][0-9]*)$/.test(sizeText)) throw new Error("the tree size is not a decimal number");
    const size = Number(sizeText);
    if (!Number.isSafeInteger(size)) throw new Error("the tree size is too large");
    const root = b64decode(rootText);
    if (root.length !== 32) throw new Error("the root hash is not 32 bytes");
    return { origin, size, root, note };
  }

  // --- proofs (RFC 9162 §2.1.3.2, §2.1.4.2) ---------------------------------

  const odd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);

  // RFC 9162's "right-shift fn and sn equally until either LSB(fn) is set
  // or fn is 0".
  function rightToOddOrZero(fn, sn) {
    while (!odd(fn) && fn !== 0) {
      fn = half(fn);
      sn = half(sn);
    }
    return [fn, sn];
  }

  async function verifyInclusion(index, size, leaf, proof, root) {
    if (index >= size) return false;
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of proof) {
      if (p.length !== 32 || sn === 0) return false;
      if (odd(fn) || fn === sn) {
        r = await nodeHash(p, r);
        if (!odd(fn)) [fn, sn] = rightToOddOrZero(fn, sn);
      } else {
        r = await nodeHash(r, p);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 && equal(r, root);
  }

  function isPowerOfTwo(n) {
    while (n > 1 && n % 2 === 0) n /= 2;
    return n === 1;
  }

  async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
    if (oldSize > newSize) return false;
    if (oldSize === newSize) return proof.length === 0 && equal(oldRoot, newRoot);
    if (oldSize === 0) return proof.length === 0;
    if (proof.some((p) => p.length !== 32)) return false;
    let path = proof;
    if (isPowerOfTwo(oldSize)) path = [oldRoot, ...proof];
    if (path.length === 0) return false;
    let fn = oldSize - 1;
    let sn = newSize - 1;
    while (odd(fn)) {
      fn = half(fn);
      sn = half(sn);
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) return false;
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        if (!odd(fn)) [fn, sn] = rightToOddOrZero(fn, sn);
      } else {
        sr = await nodeHash(sr, c);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 && equal(fr, oldRoot) && equal(sr, newRoot);
  }

  // --- entries (protobuf) ----------------------------------------------------

  class Reader {
    constructor(bytes) {
      this.b = bytes;
      this.at = 0;
    }
    done() {
      return this.at >= this.b.length;
    }
    varint() {
      let v = 0;
      let mul = 1;
      for (let i = 0; i < 10; i++) {
        if (this.at >= this.b.length) throw new Error("truncated varint");
        const byte = this.b[this.at++];
        v += (byte & 0x7f) * mul;
        mul *= 128;
        if (byte < 0x80) return v;
      }
      throw new Error("varint too long");
    }
    bytes() {
      const n = this.varint();
      if (this.at + n > this.b.length) throw new Error("truncated field");
      const out = this.b.subarray(this.at, this.at + n);
      this.at += n;
      return out;
    }
    skip(wire) {
      if (wire === 0) this.varint();
      else if (wire === 1) this.at += 8;
      else if (wire === 2) this.bytes();
      else if (wire === 5) this.at += 4;
      else throw new Error("unsupported wire type " + wire);
      if (this.at > this.b.length) throw new Error("truncated field");
    }
    // Calls on(field, wire) for each field; it returns true when it read it.
    each(on) {
      while (!this.done()) {
        const tag = this.varint();
        const field = Math.floor(tag / 8);
        const wire = tag % 8;
        if (!on(field, wire)) this.skip(wire);
      }
    }
  }

  const str = (r) => dec.decode(r.bytes());

  function timestamp(bytes) {
    const t = { seconds: 0, nanos: 0 };
    const r = new Reader(bytes);
    r.each((f, w) => {
      if (w !== 0) return false;
      if (f === 1) t.seconds = r.varint();
      else if (f === 2) t.nanos = r.varint();
      else return false;
      return true;
    });
    return t;
  }
  const KINDS = ["unspecified", "tool_call", "tool_result", "model_call", "decision", "approval_requested",
    "approval_granted", "approval_denied", "policy_violation", "kill_switch", "handoff", "custom", "agent_step"];
  const RISKS = ["unspecified", "low", "medium", "high"];
  const OUTCOMES = ["unspecified", "success", "failure", "denied", "error"];
  const name = (table, v) => (v < table.length ? table[v] : String(v));

  // RFC 3339 UTC with 0, 3, 6 or 9 fraction digits, as few as show it.
  function rfc3339(t) {
    const base = new Date(t.seconds * 1000).toISOString().slice(0, 19);
    const n = t.nanos;
    let frac = "";
    if (n !== 0) {
      const nine = String(n).padStart(9, "0");
      frac = "." + (n % 1e6 === 0 ? nine.slice(0, 3) : n % 1e3 === 0 ? nine.slice(0, 6) : nine);
    }
    return base + frac + "Z";
  }

  function decodeEvent(bytes) {
    const e = {
      event_id: "", correlation_id: "", span_id: "", parent_span_id: "", agent_id: "", session_id: "",
      principal: "", kind: 0, tool_name: "", action: "", resource: "", risk_tier: 0, outcome: 0,
      occurred_at: null, attributes: {}, payload_content_type: "",
    };
    const strings = { 1: "event_id", 2: "correlation_id", 3: "span_id", 4: "parent_span_id", 5: "agent_id",
      6: "session_id", 7: "principal", 9: "tool_name", 10: "action", 11: "resource", 17: "payload_content_type" };
    const r = new Reader(bytes);
    r.each((f, w) => {
      if (strings[f] && w === 2) e[strings[f]] = str(r);
      else if (f === 8 && w === 0) e.kind = r.varint();
      else if (f === 12 && w === 0) e.risk_tier = r.varint();
      else if (f === 13 && w === 0) e.outcome = r.varint();
      else if (f === 14 && w === 2) e.occurred_at = timestamp(r.bytes());
      else if (f === 15 && w === 2) {
        const m = new Reader(r.bytes());
        let k = "";
        let v = "";
        m.each((mf, mw) => {
          if (mw !== 2) return false;
          if (mf === 1) k = str(m);
          else if (mf === 2) v = str(m);
          else return false;
          return true;
        });
        e.attributes[k] = v;
      } else return false;
      return true;
    });
    return e;
  }

  // The stored entry bytes, decoded.
  function decodeEntry(bytes) {
    const e = {
      index: 0, prev_leaf_hash: new Uint8Array(0), integrated_at: null, writer: "", event: null,
      payload_commitment: new Uint8Array(0), payload_size: 0, redaction: null,
    };
    const r = new Reader(bytes);
    r.each((f, w) => {
      if (f === 1 && w === 0) e.index = r.varint();
      else if (f === 2 && w === 2) e.prev_leaf_hash = r.bytes();
      else if (f === 3 && w === 2) e.integrated_at = timestamp(r.bytes());
      else if (f === 4 && w === 2) e.writer = str(r);
      else if (f === 5 && w === 2) e.event = decodeEvent(r.bytes());
      else if (f === 6 && w === 2) e.payload_commitment = r.bytes();
      else if (f === 7 && w === 0) e.payload_size = r.varint();
      else if (f === 8 && w === 2) {
        const red = { target_index: 0, reason: "" };
        const m = new Reader(r.bytes());
        m.each((mf, mw) => {
          if (mf === 1 && mw === 0) red.target_index = m.varint();
          else if (mf === 2 && mw === 2) red.reason = str(m);
          else return false;
          return true;
        });
        e.redaction = red;
      } else return false;
      return true;
    });
    return e;
  }

  // The event as the API writes it in JSON (docs/console.md).
  function eventJson(e) {
    const attributes = {};
    for (const k of Object.keys(e.attributes).sort(byBytes)) attributes[k] = e.attributes[k];
    return {
      event_id: e.event_id, correlation_id: e.correlation_id, span_id: e.span_id,
      parent_span_id: e.parent_span_id, agent_id: e.agent_id, session_id: e.session_id,
      principal: e.principal, kind: name(KINDS, e.kind), tool_name: e.tool_name, action: e.action,
      resource: e.resource, risk_tier: name(RISKS, e.risk_tier), outcome: name(OUTCOMES, e.outcome),
      occurred_at: e.occurred_at ? rfc3339(e.occurred_at) : null, attributes,
      payload_content_type: e.payload_content_type,
    };
  }

  function byBytes(a, b) {
    const x = enc.encode(a);
    const y = enc.encode(b);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  }

  // A stable text of a JSON value (keys sorted), to compare two.
  function canonical(v) {
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    if (v && typeof v === "object") {
      return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
    }
    return JSON.stringify(v === undefined ? null : v);
  }

  // Checks one record of the API against a verified checkpoint. Returns
  // { ok, problems: [..], entry (decoded), payload: { state, bytes } }.
  async function verifyRecord(rec, cp) {
    const problems = [];
    let entry = null;
    let bytes;
    try {
      bytes = b64decode(rec.entry);
      entry = decodeEntry(bytes);
    } catch (e) {
      return { ok: false, problems: ["the entry bytes do not decode: " + e.message], entry: null, payload: null };
    }
    if (entry.index !== rec.index) problems.push("the entry says it is index " + entry.index + ", the server says " + rec.index);
    const leaf = await leafHash(bytes);
    const proof = rec.inclusion;
    if (!proof) {
      problems.push("no inclusion proof");
    } else if (proof.tree_size !== cp.size || proof.leaf_index !== entry.index) {
      problems.push("the proof is for index " + proof.leaf_index + " in a tree of " + proof.tree_size + ", not index " + entry.index + " in the checkpoint's " + cp.size);
    } else {
      let hashes;
      try {
        hashes = proof.hashes.map(b64decode);
      } catch (e) {
        hashes = null;
      }
      if (!hashes || !(await verifyInclusion(entry.index, cp.size, leaf, hashes, cp.root))) {
        problems.push("the inclusion proof does not lead to the signed root: the entry is not the one the log holds");
      }
    }
    // What the server decoded for convenience must be what the bytes say.
    const mine = {
      integrated_at: entry.integrated_at ? rfc3339(entry.integrated_at) : null,
      writer: entry.writer,
      event: entry.event ? eventJson(entry.event) : null,
      redaction: entry.redaction,
    };
    for (const k of Object.keys(mine)) {
      if (k in rec && canonical(rec[k]) !== canonical(mine[k])) {
        problems.push("the server's " + k + " field disagrees with the signed entry");
      }
    }
    let payload = { state: "none", bytes: null };
    if (entry.payload_commitment.length > 0) {
      if (rec.payload !== undefined && rec.payload_salt !== undefined) {
        const p = b64decode(rec.payload);
        const salt = b64decode(rec.payload_salt);
        const c = await sha256(concat(salt, p));
        if (!equal(c, entry.payload_commitment)) {
          problems.push("the payload does not match the entry's commitment");
          payload = { state: "mismatch", bytes: p };
        } else {
          payload = { state: "verified", bytes: p };
        }
      } else if (rec.payload_redacted) {
        payload = { state: "redacted", bytes: null };
      } else {
        payload = { state: "withheld", bytes: null };
      }
    }
    return { ok: problems.length === 0, problems, entry, payload, leaf };
  }

  return {
    available, b64decode, b64encode, hex, sha256, leafHash, parseVerifierKey, openNote, openCheckpoint,
    verifyInclusion, verifyConsistency, decodeEntry, eventJson, rfc3339, canonical, verifyRecord,
    KINDS, RISKS, OUTCOMES,
  };
})();
