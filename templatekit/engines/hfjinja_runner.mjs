// Renders a batch of chat templates with @huggingface/jinja for templatekit.
//
// argv: the pid of the parent process; the runner kills itself when it is no longer its parent.
// stdin: one JSON object {module, templates: [text, ...], jobs: [{template, context, now}, ...], budget}
//   module   absolute path of the package's ESM entry (dist/index.js), found by the Python side
//   template index into templates (a template is parsed once for all of its fixtures)
//   now      [year, month, day, hour, minute, second] the clock strftime_now reads
//   budget   {render_ms, template_ms}: once one render of a template takes render_ms, or all of
//            them template_ms, its later jobs are "skipped"
// stdout: {"ready":true} once the package is imported, then one JSON line per job, in job order, written as each finishes so the caller can time
//   out a single runaway render without losing the others:
//   {status: "ok", text} | {status: "parse-error" | "runtime-error" | "raised" | "skipped", message}
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";

// argv[2]: the pid of the templatekit process that started this runner. A render can keep this
// thread busy for as long as it likes, so a separate thread watches for that parent going away
// (SIGKILL, a crash, a signal it could not clean up after): node is then reparented, and ends
// itself rather than render on, orphaned, at full CPU.
const parentPid = Number(process.argv[2] ?? process.ppid);
const WATCHER = `
const { workerData } = require("node:worker_threads");
const tick = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
	Atomics.wait(tick, 0, 0, 250);
	if (process.ppid !== workerData) {
		process.kill(process.pid, "SIGKILL");
	}
}`;
new Worker(WATCHER, { eval: true, workerData: parentPid }).unref();

const input = JSON.parse(readFileSync(0, "utf8"));
const { Template, Environment } = await import(pathToFileURL(input.module).href);

// strftime_now is kept as the package's own (it formats only %Y %m %d %b %B %H %M %%, which is
// part of what is measured); only its clock is pinned, by making a bare `new Date()` return the
// job's moment. Local time on both sides, as Python's naive datetime is.
const RealDate = Date;
let pinned = null;
class PinnedDate extends RealDate {
	constructor(...args) {
		if (args.length === 0 && pinned !== null) {
			super(pinned.getTime());
		} else {
			super(...args);
		}
	}
	static now() {
		return pinned !== null ? pinned.getTime() : RealDate.now();
	}
}
globalThis.Date = PinnedDate;

// Template.render declares raise_exception itself and refuses a second declaration ("Variable
// already declared"), so a caller cannot pass its own. Let the caller's value replace the
// package's for exactly this name: the template's raise must be told apart from engine errors.
const REPLACEABLE = new Set(["raise_exception"]);
const declare = Environment.prototype.declareVariable;
Environment.prototype.declareVariable = function (name, value) {
	if (REPLACEABLE.has(name) && this.variables.has(name)) {
		this.variables.set(name, value);
		return value;
	}
	return declare.call(this, name, value);
};

class TemplateRaise extends Error {}
const raiseException = (message) => {
	throw new TemplateRaise(String(message ?? ""));
};

const parsed = new Map();
function parseOnce(index) {
	if (!parsed.has(index)) {
		try {
			parsed.set(index, { template: new Template(input.templates[index]) });
		} catch (error) {
			parsed.set(index, { error: describe(error) });
		}
	}
	return parsed.get(index);
}

function describe(error) {
	if (error instanceof Error) {
		return `${error.name}: ${error.message}`;
	}
	return String(error);
}

// The raise may arrive wrapped by the interpreter (as `cause`); look through the chain.
function raisedBy(error) {
	for (let current = error, depth = 0; current && depth < 10; current = current.cause, depth++) {
		if (current instanceof TemplateRaise) {
			return current;
		}
	}
	return null;
}

function run(job) {
	const entry = parseOnce(job.template);
	if (entry.error !== undefined) {
		return { status: "parse-error", message: entry.error };
	}
	const [year, month, day, hour, minute, second] = job.now;
	pinned = new RealDate(year, month - 1, day, hour, minute, second);
	try {
		const text = entry.template.render({ ...job.context, raise_exception: raiseException });
		return { status: "ok", text };
	} catch (error) {
		const raised = raisedBy(error);
		if (raised) {
			return { status: "raised", message: raised.message };
		}
		return { status: "runtime-error", message: describe(error) };
	} finally {
		pinned = null;
	}
}

// Start-up is over (it may take seconds on a busy machine): from here each render has its own time.
process.stdout.write(JSON.stringify({ ready: true }) + "\n");

// Once a template's renders spend its budget, its later jobs are answered "skipped" unrendered:
// each would spend as much again (the caller kills only a render that hangs outright).
const budget = input.budget ?? {};
const spent = new Map();
const used = new Map();
const seconds = (ms) => `${(ms / 1000).toFixed(1)}s`;
for (const job of input.jobs) {
	let answer;
	if (spent.has(job.template)) {
		answer = { status: "skipped", message: spent.get(job.template) };
	} else {
		const start = performance.now();
		answer = run(job);
		const took = performance.now() - start;
		const total = (used.get(job.template) ?? 0) + took;
		used.set(job.template, total);
		if (budget.render_ms && took >= budget.render_ms) {
			spent.set(job.template, `an earlier render of this template took ${seconds(took)}, ` +
				`over the ${seconds(budget.render_ms)} render budget`);
		} else if (budget.template_ms && total >= budget.template_ms) {
			spent.set(job.template, `this template's renders took ${seconds(total)} in all, ` +
				`over the ${seconds(budget.template_ms)} budget per template`);
		}
	}
	process.stdout.write(JSON.stringify(answer) + "\n");
}
