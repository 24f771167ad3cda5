// Parse Mermaid flowcharts with Mermaid's own parser, headless (jsdom stands in for the
// browser's DOM; nothing is rendered), and print what it read as JSON:
//   node parse.mjs <node_modules dir>  < ["flowchart TD\n...", ...]
// One result per text: {"error": message} when it does not parse, else
// {"nodes": {id: {shape, label}}, "edges": [[source, stroke, label, target]],
//  "subgraphs": {id: {title, members}}}. Stroke is "normal" or "dotted".
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules] = process.argv.slice(2);
if (!nodeModules) {
  console.error("usage: node parse.mjs <node_modules dir> < texts.json");
  process.exit(2);
}
// The packages live in a cache folder, not next to this script: resolve them from there.
const require = createRequire(path.join(path.resolve(nodeModules), "noop.js"));
const { JSDOM } = require("jsdom");
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import(pathToFileURL(require.resolve("mermaid")).href);
mermaid.initialize({ startOnLoad: false });

async function read(text) {
  let diagram;
  try {
    await mermaid.parse(text);
    diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
  } catch (error) {
    return { error: String(error?.message ?? error) };
  }
  const db = diagram.db;
  const subgraphs = {};
  for (const s of db.getSubGraphs()) {
    subgraphs[s.id] = { title: s.title, members: s.nodes };
  }
  const nodes = {};
  for (const [id, vertex] of db.getVertices()) {
    if (!(id in subgraphs)) nodes[id] = { shape: vertex.type, label: vertex.text };
  }
  const edges = db.getEdges().map((e) => [e.start, e.stroke, e.text, e.end]);
  return { diagram: diagram.type, nodes, edges, subgraphs };
}

const texts = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const text of texts) results.push(await read(text));
console.log(JSON.stringify(results));
