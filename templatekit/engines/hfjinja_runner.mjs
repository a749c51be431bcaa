// Renders a batch of chat templates with @huggingface/jinja for templatekit.
//
// stdin: one JSON object {module, templates: [text, ...], jobs: [{template, context, now}, ...]}
//   module   absolute path of the package's ESM entry (dist/index.js), found by the Python side
//   template index into templates (a template is parsed once for all of its fixtures)
//   now      [year, month, day, hour, minute, second] the clock strftime_now reads
// stdout: one JSON line per job, in job order, written as each finishes so the caller can time
//   out a single runaway render without losing the others:
//   {status: "ok", text} | {status: "parse-error" | "runtime-error" | "raised", message}
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

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

for (const job of input.jobs) {
	process.stdout.write(JSON.stringify(run(job)) + "\n");
}
