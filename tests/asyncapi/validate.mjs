// Parse an AsyncAPI document with @asyncapi/parser and print what it found as JSON:
//   node validate.mjs <node_modules dir> <document>
// {"diagnostics": [{code, severity, message, path}], "channels": n, "operations": n,
//  "messages": n, "schemas": n}. Counts are null when the document did not parse.
// Severity follows Spectral: 0 error, 1 warning, 2 information, 3 hint.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const [nodeModules, document] = process.argv.slice(2);
if (!nodeModules || !document) {
  console.error("usage: node validate.mjs <node_modules dir> <document>");
  process.exit(2);
}
// The parser lives in a cache folder, not next to this script: resolve it from there.
const require = createRequire(path.join(path.resolve(nodeModules), "noop.js"));
const { Parser } = require("@asyncapi/parser");

const parser = new Parser();
const source = path.resolve(document);
const { document: parsed, diagnostics } = await parser.parse(await readFile(source, "utf8"), {
  source,
});
const count = (collection) => (parsed ? collection.length : null);
console.log(
  JSON.stringify({
    diagnostics: diagnostics.map((d) => ({
      code: String(d.code),
      severity: d.severity,
      message: d.message,
      path: d.path.join("/"),
    })),
    channels: parsed ? count(parsed.channels()) : null,
    operations: parsed ? count(parsed.operations()) : null,
    messages: parsed ? count(parsed.messages()) : null,
    schemas: parsed ? count(parsed.components().schemas()) : null,
  }),
);
