// ES module entry: the same objects as index.js.
import floodwall from './index.js'

export const { Limiter, ManualClock, HttpLimiter, telemetry } = floodwall
export default floodwall
