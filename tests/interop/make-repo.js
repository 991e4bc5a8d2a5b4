// A TUF repository made by tuf-js' own metadata tooling (@tufjs/models),
// signed with keys Node's crypto makes, holding an rsr response as targets
// with the custom metadata rsr's client chooses by (copied from CUSTOM_JSON).
// Usage: node make-repo.js OUT_DIR RESPONSE_DIR TARGET_PREFIX CUSTOM_JSON
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Metadata, Root, Targets, Snapshot, Timestamp, Key, MetaFile, TargetFile, Signature } =
  require('@tufjs/models');

const [outDir, responseDir, prefix, customJson] = process.argv.slice(2);
const custom = JSON.parse(fs.readFileSync(customJson));

function newKey() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(12).toString('hex');
  const keyVal = { public: raw };
  const keyID = crypto.createHash('sha256')
    .update(JSON.stringify({ keytype: 'ed25519', keyval: keyVal, scheme: 'ed25519' })).digest('hex');
  const key = new Key({ keyID, keyType: 'ed25519', scheme: 'ed25519', keyVal });
  const signer = (data) => new Signature({ keyID, sig: crypto.sign(null, data, privateKey).toString('hex') });
  return { key, signer };
}

const inDays = (d) => new Date(Date.now() + d * 86400e3).toISOString().replace(/\.\d+Z$/, 'Z');
const keys = { root: newKey(), targets: newKey(), snapshot: newKey(), timestamp: newKey() };
const root = new Metadata(new Root({ expires: inDays(365), consistentSnapshot: true }));
for (const role of Object.keys(keys)) root.signed.addKey(keys[role].key, role);
root.sign(keys.root.signer);

const targets = new Metadata(new Targets({ expires: inDays(30) }));
const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
fs.mkdirSync(path.join(outDir, 'metadata'), { recursive: true });
function addTarget(rel, withCustom) {
  const data = fs.readFileSync(path.join(responseDir, rel));
  const tpath = prefix + '/' + rel;
  const hash = sha256(data);
  const file = new TargetFile({ length: data.length, path: tpath, hashes: { sha256: hash },
    unrecognizedFields: withCustom ? { custom } : undefined });
  targets.signed.addTarget(file);
  // Consistent snapshots: targets/DIR/<sha256>.NAME
  const dst = path.join(outDir, 'targets', path.dirname(tpath), hash + '.' + path.basename(tpath));
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.writeFileSync(dst, data);
}
for (const p of fs.readdirSync(path.join(responseDir, 'patches'))) addTarget('patches/' + p, false);
addTarget('response.json', true);
targets.sign(keys.targets.signer);

function write(name, md) {
  const bytes = Buffer.from(JSON.stringify(md.toJSON(), null, 1));
  fs.writeFileSync(path.join(outDir, 'metadata', name), bytes);
  return bytes;
}
write('1.root.json', root);
const tbytes = write('1.targets.json', targets);
const snapshot = new Metadata(new Snapshot({ expires: inDays(7),
  meta: { 'targets.json': new MetaFile({ version: 1, length: tbytes.length, hashes: { sha256: sha256(tbytes) } }) } }));
snapshot.sign(keys.snapshot.signer);
const sbytes = write('1.snapshot.json', snapshot);
const timestamp = new Metadata(new Timestamp({ expires: inDays(1),
  snapshotMeta: new MetaFile({ version: 1, length: sbytes.length, hashes: { sha256: sha256(sbytes) } }) }));
timestamp.sign(keys.timestamp.signer);
write('timestamp.json', timestamp);
console.log('made a tuf-js repository in ' + outDir);
