// How the prompt was read: under the prompt box, as you type, the parts the generator makes of
// it (story parts, then each prompt's text, weight and stop) and a warning when CLIP will cut a
// text. The server parses (POST /api/prompts/parse, the package's own parser and CLIP's
// tokenizer), so the page never re-implements the grammar. Uses app.js's helpers.
"use strict";

const reading = { timer: null, asked: 0 };

function readPromptSoon() {
  clearTimeout(reading.timer);
  reading.timer = setTimeout(readPrompt, 300);
}

function setupPromptReading() {
  $("prompt").addEventListener("input", readPromptSoon);
  $("model").addEventListener("change", readPromptSoon); // another pair's CLIPs may read fewer tokens
  $("advanced-fields").addEventListener("change", (e) => { if (e.target.dataset.option === "clip") readPromptSoon(); });
}

async function readPrompt() {
  const box = $("prompt-read");
  const asked = ++reading.asked; // answers to older text are dropped
  const job = readForm();
  if (!job.prompt) { box.hidden = true; box.replaceChildren(); return; }
  const body = { prompt: job.prompt, model: job.model };
  if (Array.isArray(job.clip) && job.clip.length) body.clip = job.clip;
  try {
    const answer = await api("/api/prompts/parse", { json: body });
    if (asked === reading.asked) showReading(answer);
  } catch (err) {
    if (asked === reading.asked) showReading({ unread: err.message, prompts: [] });
  }
}

function weightText(weight) {
  return weight < 0 ? `×${weight} pushes away` : `×${weight}`;
}

function showReading(answer) {
  const box = $("prompt-read");
  box.replaceChildren();
  box.hidden = false;
  if (answer.error || answer.unread) {
    box.append(el("p", { class: "read-error", text: answer.error ? `Cannot run: ${answer.error}` : `Not read: ${answer.unread}` }));
    return;
  }
  const cut = [];
  let count = 0;
  answer.prompts.forEach((string, i) => {
    string.parts.forEach((part, j) => {
      const line = el("div", { class: "read-part" });
      if (answer.prompts.length > 1) line.append(el("span", { class: "read-label", text: `image ${i + 1}` }));
      if (string.parts.length > 1) line.append(el("span", { class: "read-label", text: `part ${j + 1} of ${string.parts.length}` }));
      for (const p of part.prompts) {
        count++;
        if (p.cut) cut.push(p);
        line.append(el("span", {
          class: "read-prompt" + (p.weight < 0 ? " negative" : "") + (p.cut ? " cut" : ""),
          "data-weight": String(p.weight), "data-stop": p.stop ?? "", "data-tokens": String(p.tokens),
          title: `${p.tokens} of CLIP's ${answer.readable_tokens} tokens`,
        },
        el("span", { class: "t", text: p.text }),
        el("span", { class: "w", text: weightText(p.weight) }),
        p.stop != null ? el("span", { class: "w", text: `stop ${p.stop}` }) : null,
        el("span", { class: "n", text: `${p.tokens} tok` })));
      }
      box.append(line);
    });
  });
  for (const p of cut) {
    box.append(el("p", { class: "read-warn", text:
      `CLIP reads ${p.kept} of the ${p.tokens} tokens of “${p.text.slice(0, 40)}${p.text.length > 40 ? "…" : ""}”: ` +
      `it keeps “${p.kept_text}”, the rest is cut.` }));
  }
  if (!cut.length && count) {
    const parts = answer.prompts.reduce((n, s) => n + s.parts.length, 0);
    box.append(el("p", { class: "read-ok muted", text:
      `${count} prompt${count > 1 ? "s" : ""}` + (parts > answer.prompts.length ? ` in ${parts} story parts` : "") +
      ` · each within CLIP's ${answer.readable_tokens} tokens` }));
  }
}
