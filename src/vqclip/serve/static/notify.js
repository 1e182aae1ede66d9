// A notification when a job submitted from this page ends while the tab is hidden. Permission
// is asked for only when the Notify button is pressed (browsers refuse requests without a
// user's gesture, and asking unprompted is rude); denied means nothing is ever shown.
"use strict";

const notice = { choice: null }; // "on" / "off" when chosen here (kept without localStorage too)

function notifyOn() {
  const choice = notice.choice ?? saved.get("vqclip.notify");
  return "Notification" in window && Notification.permission === "granted" && choice !== "off";
}

function chooseNotify(choice) {
  notice.choice = choice;
  saved.set("vqclip.notify", choice);
}

function showNotify() {
  const button = $("notify");
  const permission = Notification.permission, on = notifyOn();
  button.classList.toggle("on", on);
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Notify: on" : permission === "denied" ? "Notify: blocked" : "Notify";
  button.title = permission === "denied"
    ? "Notifications are blocked for this page: allow them in the browser's site settings"
    : on ? "A notification when a job of this page ends while the tab is hidden (click: off)"
      : "A notification when a job of this page ends while the tab is hidden";
}

function setupNotify() {
  // Not in every browser, and only on https or localhost (a secure context).
  if (!("Notification" in window) || !window.isSecureContext) return;
  const button = $("notify");
  button.hidden = false;
  showNotify();
  button.addEventListener("click", async () => {
    if (Notification.permission === "default") {
      chooseNotify("on");
      await Notification.requestPermission(); // within the click: a user's gesture
    } else if (Notification.permission === "granted") {
      chooseNotify(notifyOn() ? "off" : "on");
    } else {
      toast("Notifications are blocked for this page in the browser's settings");
    }
    showNotify();
  });
}

// Called with every job the page hears of (stage, gallery, set): a watched job that has ended.
function noteStatus(job) {
  if (!state.watched.has(job.id) || !FINISHED.includes(job.status)) return;
  state.watched.delete(job.id);
  if (document.visibilityState !== "hidden" || !notifyOn()) return;
  const prompt = (job.prompts || []).join(" · ") || "(image prompt)";
  const note = new Notification(`vqclip: ${job.status}`, { body: `${prompt} · seed ${job.seed}`, tag: job.id });
  note.onclick = () => { window.focus(); select(job.id); note.close(); };
}
