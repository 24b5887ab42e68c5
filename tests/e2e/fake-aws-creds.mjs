// Fake AWS credential endpoints for tollgate's black-box tests: STS, EC2
// instance metadata (IMDSv2) and the container credentials endpoint, each on
// its own 127.0.0.1 ephemeral port.
//
// Every credential they issue is a fresh random key (tempCreds from
// fake-aws.mjs) added to the shared `registry` (accessKeyId -> { secretAccessKey,
// sessionToken, expiresAtMs, source }) with an expiry `expiresInMs` from now,
// rounded down to the second (AWS writes whole seconds), so a fake Bedrock
// sharing the registry accepts exactly those credentials and refuses them
// once expired.
//
// What they check, as the real services do:
//   STS (POST /, query protocol form body, XML answers with the 2011-06-15
//   namespace):
//     AssumeRoleWithWebIdentity - unsigned; WebIdentityToken must equal
//       `config.webIdentityToken` (when set), RoleArn and RoleSessionName must
//       be well formed.
//     AssumeRole - SigV4 (service sts, `region`) verified with the secret from
//       the registry by fake-aws.mjs's verifyRequestAuth (which re-signs with
//       @smithy/signature-v4), session tokens and expiry included; refusals are
//       STS XML errors (SignatureDoesNotMatch, InvalidClientTokenId,
//       ExpiredToken, ...).
//   IMDS: PUT /latest/api/token needs X-aws-ec2-metadata-token-ttl-seconds in
//     1..21600 and no X-Forwarded-For; every GET needs a live token (else 401,
//     as IMDSv2-only instances answer); GET
//     /latest/meta-data/iam/security-credentials/ lists `roleName`, and
//     .../<roleName> answers the credentials JSON (Code, LastUpdated, Type,
//     AccessKeyId, SecretAccessKey, Token, Expiration).
//   Container: GET on any path under /v2/credentials/ (RELATIVE_URI style) or
//     /creds (FULL_URI style); when `config.containerAuthToken` is set the
//     Authorization header must equal it (else 401). Answers AccessKeyId,
//     SecretAccessKey, Token, Expiration, RoleArn.
//
// `config` (returned) can be changed while running: expiresInMs,
// webIdentityToken, containerAuthToken, failWith = { sts|imds|container:
// status } to make a server fail.

import http from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { tempCreds, verifyRequestAuth, ACCOUNT_ID } from './fake-aws.mjs';

export const STS_NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const ROLE_ARN_RE = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@\/-]{1,512}$/;
const SESSION_RE = /^[\w+=,.@-]{2,64}$/;

const isoSeconds = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const xmlEscape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]);

function readBody(req, max = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > max) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

function stsError(res, status, code, message, type = 'Sender') {
  const requestId = randomUUID();
  const body =
    `<ErrorResponse xmlns="${STS_NS}">\n` +
    `  <Error>\n    <Type>${type}</Type>\n    <Code>${xmlEscape(code)}</Code>\n` +
    `    <Message>${xmlEscape(message)}</Message>\n  </Error>\n` +
    `  <RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`;
  send(res, status, 'text/xml', body, { 'x-amzn-requestid': requestId });
}

// verifyRequestAuth speaks the JSON services' error names; STS (a query
// protocol service) names the same refusals differently.
const STS_AUTH_CODES = {
  MissingAuthenticationTokenException: 'MissingAuthenticationToken',
  IncompleteSignatureException: 'IncompleteSignature',
  InvalidSignatureException: 'SignatureDoesNotMatch',
  UnrecognizedClientException: 'InvalidClientTokenId',
  ExpiredTokenException: 'ExpiredToken',
};

function credentialsXml(c) {
  return (
    `    <Credentials>\n` +
    `      <AccessKeyId>${c.accessKeyId}</AccessKeyId>\n` +
    `      <SecretAccessKey>${xmlEscape(c.secretAccessKey)}</SecretAccessKey>\n` +
    `      <SessionToken>${xmlEscape(c.sessionToken)}</SessionToken>\n` +
    `      <Expiration>${isoSeconds(c.expiresAtMs)}</Expiration>\n` +
    `    </Credentials>\n`
  );
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

/**
 * Starts the three fakes. Options: registry (Map, shared with other fakes),
 * expiresInMs (default 1 hour), roleName (IMDS, default "tollgate-role"),
 * region (STS signing region, default us-east-1), webIdentityToken and
 * containerAuthToken (expected values; unset = not checked).
 */
export async function startCredsFakes({
  registry,
  expiresInMs = 3600_000,
  roleName = 'tollgate-role',
  region = 'us-east-1',
  webIdentityToken,
  containerAuthToken,
} = {}) {
  if (!(registry instanceof Map)) throw new Error('startCredsFakes: registry (a Map) is required');
  const config = { expiresInMs, roleName, region, webIdentityToken, containerAuthToken, failWith: {} };
  const counters = { sts: 0, imds: 0, container: 0 };
  const requests = []; // { server, method, path, status, action? }
  const issued = []; // { server, accessKeyId, expiresAtMs }

  const issue = (server, source) => {
    // Whole seconds, as AWS writes them, so what a client parses is exact.
    const expiresAtMs = Math.floor((Date.now() + config.expiresInMs) / 1000) * 1000;
    const c = tempCreds(registry, { expiresAtMs, source });
    issued.push({ server, accessKeyId: c.accessKeyId, expiresAtMs });
    return { ...c, expiresAtMs };
  };
  const record = (server, req, res, extra = {}) => {
    counters[server]++;
    const entry = { server, method: req.method, path: req.url, status: 0, ...extra };
    requests.push(entry);
    res.on('finish', () => (entry.status = res.statusCode));
    return entry;
  };

  // ---- STS ----
  const sts = http.createServer(async (req, res) => {
    const entry = record('sts', req, res);
    let body;
    try {
      body = await readBody(req);
    } catch {
      return;
    }
    if (config.failWith.sts) return stsError(res, config.failWith.sts, 'ServiceUnavailable', 'Injected failure', 'Receiver');
    if (req.method !== 'POST' || req.url.split('?')[0] !== '/') {
      return stsError(res, 400, 'InvalidAction', 'Could not find operation for this request');
    }
    const form = new URLSearchParams(body.toString('utf8'));
    const action = form.get('Action');
    entry.action = action;
    if (form.get('Version') !== '2011-06-15') {
      return stsError(res, 400, 'InvalidParameterValue', `Version '${form.get('Version')}' is not supported`);
    }
    const roleArn = form.get('RoleArn') || '';
    const session = form.get('RoleSessionName') || '';
    const requestId = randomUUID();
    const roleName = roleArn.split('/').pop();
    const assumedArn = `arn:aws:sts::${ACCOUNT_ID}:assumed-role/${roleName}/${session}`;
    const assumedId = `AROA${randomBytes(8).toString('hex').toUpperCase()}:${session}`;
    const validate = () => {
      if (!ROLE_ARN_RE.test(roleArn)) return `1 validation error detected: Value '${roleArn}' at 'roleArn' failed to satisfy constraint`;
      if (!SESSION_RE.test(session)) return `1 validation error detected: Value '${session}' at 'roleSessionName' failed to satisfy constraint`;
      return null;
    };

    if (action === 'AssumeRoleWithWebIdentity') {
      const invalid = validate();
      if (invalid) return stsError(res, 400, 'ValidationError', invalid);
      const token = form.get('WebIdentityToken') || '';
      entry.webIdentityToken = token;
      if (!token || (config.webIdentityToken !== undefined && token !== config.webIdentityToken)) {
        return stsError(res, 400, 'InvalidIdentityToken', "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements");
      }
      const c = issue('sts', 'sts-web-identity');
      entry.accessKeyId = c.accessKeyId;
      return send(
        res,
        200,
        'text/xml',
        `<AssumeRoleWithWebIdentityResponse xmlns="${STS_NS}">\n` +
          `  <AssumeRoleWithWebIdentityResult>\n` +
          `    <Audience>sts.amazonaws.com</Audience>\n` +
          `    <AssumedRoleUser>\n      <AssumedRoleId>${xmlEscape(assumedId)}</AssumedRoleId>\n` +
          `      <Arn>${xmlEscape(assumedArn)}</Arn>\n    </AssumedRoleUser>\n` +
          `    <Provider>arn:aws:iam::${ACCOUNT_ID}:oidc-provider/oidc.example.com</Provider>\n` +
          credentialsXml(c) +
          `    <SubjectFromWebIdentityToken>system:serviceaccount:default:tollgate</SubjectFromWebIdentityToken>\n` +
          `  </AssumeRoleWithWebIdentityResult>\n` +
          `  <ResponseMetadata>\n    <RequestId>${requestId}</RequestId>\n  </ResponseMetadata>\n` +
          `</AssumeRoleWithWebIdentityResponse>\n`,
        { 'x-amzn-requestid': requestId },
      );
    }

    if (action === 'AssumeRole') {
      const auth = await verifyRequestAuth({
        method: req.method,
        rawUrl: req.url,
        headers: req.headers,
        body,
        registry,
        region: config.region,
        service: 'sts',
      });
      entry.callerKeyId = auth.accessKeyId;
      if (!auth.ok) {
        entry.authError = auth.name;
        return stsError(res, auth.status, STS_AUTH_CODES[auth.name] || auth.name, auth.message);
      }
      const invalid = validate();
      if (invalid) return stsError(res, 400, 'ValidationError', invalid);
      entry.externalId = form.get('ExternalId');
      const c = issue('sts', 'sts-assume-role');
      entry.accessKeyId = c.accessKeyId;
      return send(
        res,
        200,
        'text/xml',
        `<AssumeRoleResponse xmlns="${STS_NS}">\n` +
          `  <AssumeRoleResult>\n` +
          `    <AssumedRoleUser>\n      <AssumedRoleId>${xmlEscape(assumedId)}</AssumedRoleId>\n` +
          `      <Arn>${xmlEscape(assumedArn)}</Arn>\n    </AssumedRoleUser>\n` +
          credentialsXml(c) +
          `  </AssumeRoleResult>\n` +
          `  <ResponseMetadata>\n    <RequestId>${requestId}</RequestId>\n  </ResponseMetadata>\n` +
          `</AssumeRoleResponse>\n`,
        { 'x-amzn-requestid': requestId },
      );
    }
    return stsError(res, 400, 'InvalidAction', `Could not find operation ${action} for version 2011-06-15`);
  });

  // ---- IMDSv2 ----
  const imdsTokens = new Map(); // token -> expiresAtMs
  const credsPath = '/latest/meta-data/iam/security-credentials/';
  const imds = http.createServer(async (req, res) => {
    record('imds', req, res);
    try {
      await readBody(req, 4096);
    } catch {
      return;
    }
    if (config.failWith.imds) return send(res, config.failWith.imds, 'text/plain', '');
    const path = req.url.split('?')[0];
    if (path === '/latest/api/token') {
      if (req.method !== 'PUT') return send(res, 405, 'text/plain', '');
      if (req.headers['x-forwarded-for']) return send(res, 403, 'text/plain', '');
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600) return send(res, 400, 'text/plain', '');
      const token = randomBytes(42).toString('base64');
      imdsTokens.set(token, Date.now() + ttl * 1000);
      return send(res, 200, 'text/plain', token, { 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', '');
    const token = req.headers['x-aws-ec2-metadata-token'];
    const exp = token && imdsTokens.get(token);
    if (!exp || Date.now() >= exp) return send(res, 401, 'text/plain', '');
    if (path === credsPath) return send(res, 200, 'text/plain', config.roleName);
    if (path === credsPath + config.roleName) {
      const c = issue('imds', 'imds');
      return send(
        res,
        200,
        'text/plain',
        JSON.stringify(
          {
            Code: 'Success',
            LastUpdated: isoSeconds(Date.now()),
            Type: 'AWS-HMAC',
            AccessKeyId: c.accessKeyId,
            SecretAccessKey: c.secretAccessKey,
            Token: c.sessionToken,
            Expiration: isoSeconds(c.expiresAtMs),
          },
          null,
          2,
        ),
      );
    }
    return send(res, 404, 'text/html', '<?xml version="1.0" encoding="iso-8859-1"?>\n<title>404 - Not Found</title>\n');
  });

  // ---- container credentials ----
  const container = http.createServer(async (req, res) => {
    const entry = record('container', req, res);
    try {
      await readBody(req, 4096);
    } catch {
      return;
    }
    entry.authorization = req.headers.authorization;
    if (config.failWith.container) {
      return send(res, config.failWith.container, 'application/json', JSON.stringify({ code: 'InternalError', message: 'Injected failure' }));
    }
    const path = req.url.split('?')[0];
    if (req.method !== 'GET' || !(path.startsWith('/v2/credentials/') || path === '/creds')) {
      return send(res, 404, 'application/json', JSON.stringify({ code: 'NotFound', message: 'Not found' }));
    }
    if (config.containerAuthToken !== undefined && req.headers.authorization !== config.containerAuthToken) {
      return send(res, 401, 'application/json', JSON.stringify({ code: 'AccessDeniedException', message: 'Authorization token is invalid' }));
    }
    const c = issue('container', 'container');
    return send(
      res,
      200,
      'application/json',
      JSON.stringify({
        RoleArn: `arn:aws:iam::${ACCOUNT_ID}:role/tollgate-task`,
        AccessKeyId: c.accessKeyId,
        SecretAccessKey: c.secretAccessKey,
        Token: c.sessionToken,
        Expiration: isoSeconds(c.expiresAtMs),
      }),
    );
  });

  const servers = [sts, imds, container];
  const [stsUrl, imdsUrl, containerUrl] = await Promise.all(servers.map(listen));
  return {
    stsUrl,
    imdsUrl,
    containerUrl,
    counters,
    requests,
    issued,
    config,
    async close() {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise((r) => {
              s.close(() => r());
              s.closeAllConnections?.();
            }),
        ),
      );
    },
  };
}
