// The JavaScript half of benchmarks/bench_refer.py (run that instead; it feeds this script).
// Setup: cd benchmarks/js && npm ci
//
// stdin:  {"causes": [<JSON>...], "min_seconds": 1.0}
// stdout: {"refer_ops_per_s": n, "id_ops_per_s": n, "cids": [...], "version": "2.x.y"}
//
// merkle-reference caches trees per object identity (WeakMap), so every timed call gets
// an object it has never seen: fresh copies are parsed before each timed round.

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { refer } from 'merkle-reference'

const input = JSON.parse(readFileSync(0, 'utf8'))
const text = JSON.stringify(input.causes)
const minSeconds = input.min_seconds ?? 1.0
const fresh = () => JSON.parse(text)

const measure = (op) => {
  // warm up the JIT
  for (let i = 0; i < 3; i++) for (const c of fresh()) op(c)
  let calls = 0
  let elapsed = 0n
  const budget = BigInt(Math.round(minSeconds * 1e9))
  while (elapsed < budget) {
    const batch = fresh()
    const start = process.hrtime.bigint()
    for (const c of batch) op(c)
    elapsed += process.hrtime.bigint() - start
    calls += batch.length
  }
  return calls / (Number(elapsed) / 1e9)
}

const referOps = measure((c) => refer(c))
const idOps = measure((c) => 'of:' + refer(c).toJSON()['/'])
const cids = fresh().map((c) => refer(c).toJSON()['/'])

const require = createRequire(import.meta.url)
let version = 'unknown'
try {
  version = JSON.parse(readFileSync(require.resolve('merkle-reference/package.json'), 'utf8')).version
} catch {
  // package.json not exported: fall back to the lock file's record
  const lock = JSON.parse(readFileSync(new URL('./package-lock.json', import.meta.url), 'utf8'))
  version = lock.packages?.['node_modules/merkle-reference']?.version ?? 'unknown'
}

process.stdout.write(JSON.stringify({ refer_ops_per_s: referOps, id_ops_per_s: idOps, cids, version }) + '\n')
