// Regenerate with:  cd tests/vectors && npm ci && node make_vectors.mjs
//
// Writes refer_vectors.json: [{"value": <tagged JSON>, "cid": refer(value).toJSON()["/"]}, ...]
// computed by the reference implementation (npm merkle-reference 2.x, pinned by
// package-lock.json). tests/test_identity.py checks cellkernel.identity.refer against it.
//
// Values JSON cannot carry exactly use a one-key tagged object:
//   {"$int": "<decimal>"}   a Python int; JavaScript gets Number(<decimal>) (rounded to a double)
//   {"$float": "<repr>"}    a Python float (e.g. "-0", "1.0"); JavaScript gets Number(<repr>)
//   {"$bytes": "<hex>"}     Python bytes / JavaScript Uint8Array
//   {"$ref": <value>}       the Reference of <value> embedded in the outer value
//   {"$link": <value>}      {"/": <the 36 raw CID bytes of refer(<value>)>} (JS duck-types it as a link)
// "json_cid" is present when merkle-reference/json (which calls toJSON(), so an embedded
// Reference hashes as the map {"/": cid}) disagrees with the default refer.

import { writeFileSync } from 'node:fs'
import { refer } from 'merkle-reference'
import { refer as referJSON } from 'merkle-reference/json'

const TAGS = new Set(['$int', '$float', '$bytes', '$ref', '$link'])

const isTagged = (v) =>
  v !== null && typeof v === 'object' && !Array.isArray(v) &&
  Object.keys(v).length === 1 && TAGS.has(Object.keys(v)[0])

const fromHex = (hex) => new Uint8Array(hex.match(/../g)?.map((b) => parseInt(b, 16)) ?? [])

/** Turns the tagged encoding into the JavaScript value. Always builds fresh objects:
 * merkle-reference caches trees per object identity (WeakMap). */
const decode = (v) => {
  if (Array.isArray(v)) return v.map(decode)
  if (v === null || typeof v !== 'object') return v
  if (isTagged(v)) {
    const [[tag, inner]] = Object.entries(v)
    switch (tag) {
      case '$int': return Number(inner)
      case '$float': return Number(inner)
      case '$bytes': return fromHex(inner)
      case '$ref': return refer(decode(inner))
      case '$link': return { '/': refer(decode(inner))['/'] }
    }
  }
  const out = {}
  for (const [k, x] of Object.entries(v)) out[k] = decode(x)
  return out
}

// ---------------------------------------------------------------- deterministic PRNG
let seed = 0x5eed1234
const rand = () => {
  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = (xs) => xs[Math.floor(rand() * xs.length)]
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1))

const CHARS = [
  'a', 'b', 'z', 'A', 'Z', '0', '9', ' ', '_', '-', ':', '/', '"', '\\', '\n', '\t', '\u0000',
  'é', 'e\u0301', 'ß', 'Ω', 'ж', '中', '文', '한', 'ا', '\u2028', '\ufeff', '\uffff', '\ue000',
  '😀', '𝄞', '👩\u200d👩\u200d👧', '🇫🇷', '\u{10ffff}',
]
const randString = () => {
  const n = int(0, 12)
  let s = ''
  for (let i = 0; i < n; i++) s += pick(CHARS)
  return s
}
const randKey = () => (rand() < 0.6 ? pick(['id', 'name', 'value', 'parent', 'inputs', 'x', 'y', '', 'é', '10', '9', 'Z', 'a b']) : randString())
const randNumber = () => {
  switch (int(0, 5)) {
    case 0: return int(-1000, 1000)
    case 1: return int(-(2 ** 31), 2 ** 31)
    case 2: return Math.round((rand() - 0.5) * 2 ** 53)
    case 3: return (rand() - 0.5) * 1000
    case 4: return rand() * 10 ** int(-20, 20)
    default: return -rand() * 10 ** int(-300, 300)
  }
}
const randScalar = () => {
  switch (int(0, 4)) {
    case 0: return null
    case 1: return rand() < 0.5
    case 2: return randNumber()
    default: return randString()
  }
}
const randValue = (depth) => {
  if (depth <= 0 || rand() < 0.35) return randScalar()
  if (rand() < 0.5) {
    const n = int(0, 7)
    return Array.from({ length: n }, () => randValue(depth - 1))
  }
  const n = int(0, 7)
  const out = {}
  for (let i = 0; i < n; i++) out[randKey()] = randValue(depth - 1)
  return out
}

// ---------------------------------------------------------------- hand-picked values
const vectors = []
const add = (value) => vectors.push(value)

// scalars
for (const v of [null, true, false, '', 'a', 'hello world', 'Point', '\u0000', ' ']) add(v)
// unicode
for (const v of [
  'é', 'e\u0301', 'é\u0301\u0302', 'ßẞ', 'Ωμέγα', 'жизнь', '中文字符', '한국어', 'مرحبا', 'שלום',
  '😀', '𝄞 music', '👩\u200d👩\u200d👧\u200d👦', '🇯🇵🇫🇷', '\u{10ffff}', '\uffff', '\ue000',
  '\u2028\u2029', '\ufeffbom', 'tab\there', 'new\nline', 'quote"back\\slash',
  '\ud800', '\udfff', 'a\ud83db', '\ude00\ud83d', 'x'.repeat(1000), '😀'.repeat(300),
]) add(v)
// integers
for (const v of [
  0, 1, -1, 2, 63, 64, -64, -65, 127, 128, 255, 256, 1985, -1985, 10 ** 6, -(10 ** 9),
  2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32, 2 ** 32 + 1,
  2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 53, -(2 ** 53), 2 ** 53 + 2, 2 ** 60, 2 ** 63, -(2 ** 63), 2 ** 64,
  10 ** 15, 10 ** 20, 10 ** 21, 10 ** 22, 1e100, -1e100, 1e300, 1.7976931348623157e308, -1.7976931348623157e308, 2 ** 1023,
]) add(v)
// Python ints beyond the safe range, which JavaScript only holds rounded to a double
for (const v of [
  '9007199254740993', '-9007199254740993', '9007199254740995', '9223372036854775807',
  '-9223372036854775809', '18446744073709551615', '18446744073709551617',
  '123456789012345678901234567890', String(2n ** 200n + 1n), '1000000000000000000000',
]) add({ $int: v })
// floats
for (const v of [
  0.5, -0.5, -1.25, 0.1, 0.2, 0.30000000000000004, 1 / 3, 2 / 3, 18.033, 3.141592653589793,
  1e-7, -1e-7, 1e-300, 5e-324, -5e-324, 2.2250738585072014e-308, Number.EPSILON, 123456.789,
  4503599627370495.5, -4503599627370495.5, 1.5, 2.5, 1e-10, 9.999999999999999e22 / 7,
]) add(v)
// floats with integral values are integers, as in JavaScript
for (const v of ['0.0', '-0', '-0.0', '1.0', '2.0', '-3.0', '1e21', '1e300', '4503599627370496.0', '9007199254740993.0']) {
  add({ $float: v })
}
// bytes (Uint8Array in JavaScript)
for (const v of ['', '00', '01020304', 'ff'.repeat(64), '68656c6c6f']) add({ $bytes: v })
add(['bytes in a list', { $bytes: 'deadbeef' }, { blob: { $bytes: '00ff' } }])

// empty and nested containers
add([])
add({})
add([[]])
add([{}])
add({ '': {} })
add([[], [[]], [[], [[]]]])
add(['hi'])
add(['Point', ['x', 1], ['y', 2]])
add([null, true, false, 0, -1, 0.5, '', [], {}])
add([1, 2, 3])
add([1, 2, 3, 4])
add([1, 2, 3, 4, 5])
add(Array.from({ length: 7 }, (_, i) => i))
add(Array.from({ length: 8 }, (_, i) => i))
add(Array.from({ length: 9 }, (_, i) => String(i)))
add(Array.from({ length: 33 }, (_, i) => i * i))
add(Array.from({ length: 100 }, (_, i) => (i % 3 === 0 ? null : i % 3 === 1 ? `s${i}` : i / 4)))
add([1, [2, [3, [4, [5, [6]]]]]])
add({ message: { from: '@gozala', to: '@mikeal', payload: 'Hi' } })
add({ message: { from: 'gozala', payload: 'hi', to: 'mikeal' } })
add({ a: 1 })
add({ a: null })
add({ a: [] })
add({ a: {} })
add({ a: { b: { c: { d: { e: 'deep' } } } } })
add({ list: [{ x: 1 }, { x: 2 }, { x: [1, { y: [true, false, null] }] }] })
let deep = 'leaf'
for (let i = 0; i < 500; i++) deep = [deep]
add(deep)
let deepMap = null
for (let i = 0; i < 300; i++) deepMap = { k: deepMap, i }
add(deepMap)
add(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`key${i}`, i])))

// key order: every permutation of insertion order hashes alike, keys sort by UTF-8 bytes
const permutations = (xs) =>
  xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]))
for (const keys of [
  ['a', 'b', 'c'],
  ['b', 'B', '_', '1'],
  ['10', '9', '1', '01'],
  ['', ' ', 'a'],
  ['z', 'é', 'Z', 'e\u0301'],
  ['\uffff', '😀', '\ue000', 'ｚ'],
]) {
  const cids = new Set()
  for (const p of permutations(keys)) {
    const value = Object.fromEntries(p.map((k) => [k, keys.indexOf(k)]))
    cids.add(refer(value).toJSON()['/'])
    add(value)
  }
  if (cids.size !== 1) throw new Error(`order-dependent hash for keys ${JSON.stringify(keys)}`)
}
// '\ud800' and '\ufffd' have the same UTF-8 bytes (TextEncoder): a sort tie, kept in
// insertion order by the stable sort, so these permutations do hash differently.
const surrogateKeys = ['\ud800', '\ufffd', 'a']
for (const p of permutations(surrogateKeys)) add(Object.fromEntries(p.map((k) => [k, surrogateKeys.indexOf(k)])))
add({ 'a\ud83d': 1, 'a\ude00': 2, a: 3, 'a\ud83d\ude00': 4 })
add({ '😀': '\uffff', '\uffff': '😀' })
add({ a: 1, b: { d: 4, c: 3 }, e: [{ g: 7, f: 6 }] })
add({ b: { c: 3, d: 4 }, e: [{ f: 6, g: 7 }], a: 1 })

// keys that look like the tagged encoding, but with more than one key
add({ $int: '1', extra: true })
add({ '/': 'baedreiejlbo3grw733nk7wp5mzjfqyzpa7hquspn4yt4np6zq3375fpavq' })

// embedded references stand for the digest they carry
add({ $ref: null })
add({ $ref: { x: 1 } })
add([{ $ref: { x: 1 } }])
add([{ x: 1 }])
add({ parent: { $ref: { a: [1, 2, 3] } }, index: 0 })
add({ parent: { a: [1, 2, 3] }, index: 0 })
add([{ $ref: 'hi' }, { $ref: [{ $ref: 1 }] }, { $ref: [] }])
add({ $link: { x: 1 } })
add([{ $link: { x: 1 } }])
add({ '/': { $bytes: '01071220' + '00'.repeat(31) } }) // too short: a plain map
// typical causes
const cid = refer({ seed: 1 }).toJSON()['/']
add({ parent: `of:${cid}`, helper: 'lift', impl: 'ab'.repeat(32), inputs: [`of:${cid}`, `of:${refer(2).toJSON()['/']}`], index: 0, config: null })
add({ causal: { parent: `of:${cid}`, index: 3 } })
add({ causal: null })
add({ causal: 'some cause' })
add({ the: 'application/json', of: `of:${cid}` })

// random structures
for (let i = 0; i < 160; i++) add(randValue(int(1, 5)))

// ---------------------------------------------------------------- compute
const out = []
for (const value of vectors) {
  const js = decode(value)
  const cid = refer(js).toJSON()['/']
  const json = referJSON(decode(value)).toJSON()['/']
  const entry = { value, cid }
  if (json !== cid) {
    entry.json_cid = json
  }
  out.push(entry)
}

// sanity: an embedded reference hashes as the value it names
if (refer([refer({ x: 1 })]).toString() !== refer([{ x: 1 }]).toString()) throw new Error('links')

const text = '[\n' + out.map((e) => JSON.stringify(e)).join(',\n') + '\n]\n'
writeFileSync(new URL('./refer_vectors.json', import.meta.url), text)
console.log(`wrote ${out.length} vectors (${out.filter((e) => e.json_cid).length} with json_cid)`)
