// tuf-js as a client of an rsr repository: refresh the metadata from
// METADATA_URL (trusting ROOT_JSON), then download and verify TARGET into OUT.
// Usage: node client.js ROOT_JSON BASE_URL TARGET OUT WORKDIR
'use strict';
const fs = require('fs');
const path = require('path');
const { Updater } = require('tuf-js');

async function main() {
  const [rootJson, baseUrl, target, out, work] = process.argv.slice(2);
  const metadataDir = path.join(work, 'metadata');
  const targetDir = path.join(work, 'targets');
  fs.mkdirSync(metadataDir, { recursive: true });
  fs.mkdirSync(targetDir, { recursive: true });
  fs.copyFileSync(rootJson, path.join(metadataDir, 'root.json'));
  const updater = new Updater({
    metadataBaseUrl: baseUrl + '/metadata',
    targetBaseUrl: baseUrl + '/targets',
    metadataDir,
    targetDir,
  });
  await updater.refresh();
  const info = await updater.getTargetInfo(target);
  if (!info) throw new Error('no target ' + target);
  const got = await updater.downloadTarget(info, out);
  const root = JSON.parse(fs.readFileSync(path.join(metadataDir, 'root.json')));
  console.log(JSON.stringify({ path: got, length: info.length, sha256: info.hashes.sha256,
    custom: info.custom, root_version: root.signed.version }));
}

main().catch((e) => {
  console.error('tuf-js: ' + (e && e.message ? e.message : e));
  process.exit(1);
});
