// Minimal JWT signing for tests (HS256, RS256, ES256) with node:crypto, so the tests need no JWT
// package and can forge tokens precisely.
'use strict'

const crypto = require('node:crypto')

const b64url = (buf) => Buffer.from(buf).toString('base64url')

function sign(claims, { alg = 'HS256', secret, privateKey } = {}) {
  const header = b64url(JSON.stringify({ alg, typ: 'JWT' }))
  const payload = b64url(JSON.stringify(claims))
  const data = `${header}.${payload}`
  let sig
  if (alg === 'HS256') sig = crypto.createHmac('sha256', secret).update(data).digest()
  else if (alg === 'RS256') sig = crypto.sign('sha256', Buffer.from(data), privateKey)
  else if (alg === 'ES256')
    sig = crypto.sign('sha256', Buffer.from(data), { key: privateKey, dsaEncoding: 'ieee-p1363' })
  else if (alg === 'none') sig = Buffer.alloc(0)
  else throw new Error(`unsupported alg ${alg}`)
  return `${data}.${b64url(sig)}`
}

function rsaPair() {
  return crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  })
}

function ecPair() {
  return crypto.generateKeyPairSync('ec', {
    namedCurve: 'P-256',
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  })
}

module.exports = { sign, rsaPair, ecPair }
