// TLS against the real server with native TLS (`serve --tls-cert --tls-key`, and
// `--tls-client-ca` for mTLS): the Node client's `tls: { ca, cert, key }` option.
// Certificates are made with openssl in a temporary directory.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { createClient } from "../../dist/node/index.js";
import { API_KEY, freshDatabase, metric, startServer } from "../harness.mjs";

const dir = mkdtempSync(join(tmpdir(), "eventline-ts-tls-"));

function openssl(...args) {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** A self-signed CA (P-256) that can sign certificates. */
function makeCa(name) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
    "-keyout", key, "-out", cert, "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  return { key, cert };
}

/** A certificate for `name` signed by `ca`, with `extensions` (openssl config lines). */
function makeLeaf(name, ca, extensions) {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const extfile = join(dir, `${name}.ext`);
  writeFileSync(extfile, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n${extensions}`);
  openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", csr, "-subj", `/CN=${name}`);
  openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", `0x${randomBytes(8).toString("hex")}`,
    "-days", "1", "-out", cert, "-extfile", extfile);
  return { key: readFileSync(key), cert: readFileSync(cert), keyPath: key, certPath: cert };
}

const serverCa = makeCa("server-ca");
const clientCa = makeCa("client-ca");
const strangerCa = makeCa("stranger-ca");
const serverLeaf = makeLeaf("localhost", serverCa, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
const clientLeaf = makeLeaf("client", clientCa, "extendedKeyUsage=clientAuth\n");
const strangerLeaf = makeLeaf("stranger", strangerCa, "extendedKeyUsage=clientAuth\n");
const ca = readFileSync(serverCa.cert); // a Buffer; the tests pass it as a string too

const db = freshDatabase();
let tlsServer;
let mtlsServer;
before(async () => {
  const serverArgs = ["--tls-cert", serverLeaf.certPath, "--tls-key", serverLeaf.keyPath];
  tlsServer = await startServer(db.url, { args: serverArgs, tls: { ca } });
  mtlsServer = await startServer(db.url, {
    args: [...serverArgs, "--tls-client-ca", clientCa.cert],
    tls: { ca, cert: clientLeaf.cert, key: clientLeaf.key },
  });
});
after(async () => {
  await tlsServer?.kill();
  await mtlsServer?.kill();
  db.drop();
  rmSync(dir, { recursive: true, force: true });
});

const none = { accepted: 0, duplicates: 0, rejected: 0, dropped: 0, failed: 0 };
const failures = (server) => metric(server, 'eventline_tls_handshakes_total{outcome="failed"}');

async function tracksAndLists(client, eventType, count) {
  const ids = new Set();
  for (let index = 0; index < count; index++) ids.add(client.track(eventType, { properties: { index } }));
  assert.equal(await client.flush(30_000), true);
  assert.equal(await client.countEvents({ eventType }), count);
  const listed = [];
  for await (const event of client.listEvents({ eventType })) listed.push(event.eventId);
  assert.deepEqual(new Set(listed), ids);
  assert.equal(listed.length, count);
  assert.deepEqual(await client.shutdown(10_000), { ...none, accepted: count });
}

test("an https:// baseUrl with tls.ca tracks events that are accepted and listed", async () => {
  assert.match(tlsServer.grpcUrl, /^https:\/\/localhost:/);
  await tracksAndLists(createClient({ baseUrl: tlsServer.grpcUrl, apiKey: API_KEY, tls: { ca } }), "secure", 100);
  // PEM as a string works the same, and so does 127.0.0.1 (an IP in the certificate).
  const byIp = tlsServer.grpcUrl.replace("localhost", "127.0.0.1");
  await tracksAndLists(createClient({ baseUrl: byIp, apiKey: API_KEY, tls: { ca: ca.toString("utf8") } }), "secure-ip", 10);
  assert.ok((await metric(tlsServer, 'eventline_tls_handshakes_total{outcome="ok"}')) >= 1);
});

test("without the CA the events fail, not track(), and queries reject", async () => {
  const before = await failures(tlsServer);
  const errors = [];
  const client = createClient({ baseUrl: tlsServer.grpcUrl, apiKey: API_KEY, onError: (error) => errors.push(error) });
  client.track("untrusted"); // never throws for the network
  assert.deepEqual(await client.shutdown(2_000), { ...none, failed: 1 });
  assert.ok(errors.length >= 1, "onError saw the handshake failing");
  await assert.rejects(client.countEvents({ eventType: "untrusted" }));
  assert.ok((await failures(tlsServer)) > before);
});

test("mTLS: a client certificate signed by the client CA is served", async () => {
  const client = createClient({
    baseUrl: mtlsServer.grpcUrl,
    apiKey: API_KEY,
    // PEM as a plain Uint8Array and as a string.
    tls: { ca: [ca], cert: new Uint8Array(clientLeaf.cert), key: clientLeaf.key.toString("utf8") },
  });
  await tracksAndLists(client, "mutual", 50);
});

for (const [name, identity] of [
  ["no client certificate", {}],
  ["a client certificate from another CA", { cert: strangerLeaf.cert, key: strangerLeaf.key }],
]) {
  test(`mTLS: with ${name} the events fail, not track(), and queries reject`, async () => {
    const before = await failures(mtlsServer);
    const client = createClient({ baseUrl: mtlsServer.grpcUrl, apiKey: API_KEY, tls: { ca, ...identity }, onError: () => {} });
    client.track("refused"); // never throws for the network
    assert.deepEqual(await client.shutdown(2_000), { ...none, failed: 1 });
    await assert.rejects(client.countEvents({ eventType: "refused" }));
    assert.ok((await failures(mtlsServer)) > before);
  });
}

test("tls is checked when the client is made", () => {
  const made = (options) => () => createClient({ baseUrl: tlsServer.grpcUrl, apiKey: API_KEY, ...options });
  assert.throws(made({ baseUrl: "http://localhost:1", tls: { ca } }), { name: "TypeError", message: /tls: needs an https:\/\/ baseUrl/ });
  assert.throws(made({ tls: { cert: clientLeaf.cert } }), { name: "TypeError", message: /tls.key: required with tls.cert/ });
  assert.throws(made({ tls: { key: clientLeaf.key } }), { name: "TypeError", message: /tls.cert: required with tls.key/ });
  assert.throws(made({ tls: { ca: 42 } }), { name: "TypeError", message: /tls.ca: must be PEM/ });
  assert.throws(made({ tls: { ca: [] } }), { name: "TypeError", message: /tls.ca: an empty array/ });
  assert.throws(made({ tls: { cafile: "ca.pem" } }), { name: "TypeError", message: /tls.cafile: unknown option/ });
});
