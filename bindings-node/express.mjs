// ES module entry of floodwall/express: the same objects as express.js.
import express from './express.js'

export const { rateLimit } = express
export default express
