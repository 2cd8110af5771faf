// The layering the code keeps, checked by `npm run check`: no import cycle anywhere, and each part
// imports only what lies below it.
//
//   protocol/        the wire contract with clients: imports nothing of ours
//   kernel/          below the Worker and the objects: protocol/ only
//   durable-objects/ protocol/, kernel/; one object's folder never imports another's
//                    (they meet in durable-objects/contract.ts and durable-objects/lib/)
//   worker/          protocol/, kernel/, and of the objects only their contract (and, in
//                    worker/index.ts, the classes it exports to the runtime)
//   web/src/         protocol/ only
//
// Type-only imports count: a cycle of types is still a cycle a reader has to untangle.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const PARTS = ["protocol", "kernel", "durable-objects", "worker", "web/src"];

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.tsx?$/.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

function resolveImport(from: string, specifier: string): string | null {
  if (!specifier.startsWith(".")) return null;
  const base = resolve(dirname(from), specifier);
  for (const candidate of [base, `${base}.ts`, `${base}.tsx`, join(base, "index.ts")]) {
    if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
  }
  return null;
}

const files = PARTS.flatMap((part) => sourceFiles(join(ROOT, part)));
const graph = new Map<string, string[]>();
for (const file of files) {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
  graph.set(file, importedFiles.flatMap((i) => resolveImport(file, i.fileName) ?? []));
}

const rel = (path: string) => relative(ROOT, path);
const partOf = (path: string) => PARTS.find((part) => rel(path).startsWith(`${part}/`)) ?? "other";
const objectFolder = (path: string) => /^durable-objects\/([^/]+)\//.exec(rel(path))?.[1];

/** Why `from` may not import `to`, or null when it may. */
function violation(from: string, to: string): string | null {
  const [a, b] = [partOf(from), partOf(to)];
  if (a === b) {
    const [fa, fb] = [objectFolder(from), objectFolder(to)];
    if (a === "durable-objects" && fa && fb && fa !== fb && fa !== "lib" && fb !== "lib") {
      return "an object's modules import another object's only through durable-objects/contract.ts";
    }
    return null;
  }
  const allowed: Record<string, string[]> = {
    protocol: [],
    kernel: ["protocol"],
    "durable-objects": ["protocol", "kernel"],
    worker: ["protocol", "kernel", "durable-objects"],
    "web/src": ["protocol"],
  };
  if (!(allowed[a] ?? []).includes(b)) return `${a}/ may import only ${(allowed[a] ?? []).join(", ") || "nothing of ours"}`;
  if (a === "worker" && b === "durable-objects") {
    const classExport = rel(from) === "worker/index.ts" && /^durable-objects\/[^/]+\/[A-Za-z]+DO\.ts$/.test(rel(to));
    if (rel(to) !== "durable-objects/contract.ts" && !classExport) return "the Worker meets the objects through durable-objects/contract.ts";
  }
  return null;
}

const problems: string[] = [];
for (const [from, tos] of graph) {
  for (const to of tos) {
    const why = violation(from, to);
    if (why) problems.push(`${rel(from)} imports ${rel(to)}: ${why}`);
  }
}

// Cycles: Tarjan's strongly connected components; any component of more than one file is a cycle.
let index = 0;
const indices = new Map<string, number>();
const lowlink = new Map<string, number>();
const stack: string[] = [];
const onStack = new Set<string>();
function connect(v: string): void {
  indices.set(v, index);
  lowlink.set(v, index++);
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!indices.has(w)) {
      connect(w);
      lowlink.set(v, Math.min(lowlink.get(v)!, lowlink.get(w)!));
    } else if (onStack.has(w)) {
      lowlink.set(v, Math.min(lowlink.get(v)!, indices.get(w)!));
    }
  }
  if (lowlink.get(v) === indices.get(v)) {
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1) problems.push(`import cycle: ${component.map(rel).sort().join(" <-> ")}`);
  }
}
for (const file of graph.keys()) if (!indices.has(file)) connect(file);

if (problems.length > 0) {
  console.error(`${problems.length} boundary problem(s):\n${problems.map((p) => `  ${p}`).join("\n")}`);
  process.exit(1);
}
console.log(`boundaries: ${files.length} files, no import cycle, every import within its layer`);
