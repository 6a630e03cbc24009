// The phone page a space's QR code opens (/checkin/{site}/{space}; api/routers/checkins.py):
// the tasks the space's obligations accept, a note and an optional photo. One submission is
// one event id (made when the form is filled), so a double tap or a retry records it once.
// The person is the signed-in user (session cookie; until then, or for a machine, a token).
"use strict";

(() => {
  const [, , site, space] = location.pathname.split("/").map(decodeURIComponent);
  let data = null;
  let eventId = crypto.randomUUID();
  let busy = false;

  const $ = (id) => document.getElementById(id);
  const fmt = (iso) => new Date(iso).toLocaleString(L("en-GB", "zh-CN"), { timeZoneName: "short" });

  function labels() {
    document.title = `clausewatch · ${L("Check-in", "现场签到")}`;
    $("title").textContent = L("Check-in", "现场签到");
    $("tasks-legend").textContent = L("Work done", "完成的工作");
    $("note-label").textContent = L("Note (optional)", "备注（可选）");
    $("photo-label").textContent = L("Photo (optional, JPEG/PNG/WebP, ≤ 5 MB)", "照片（可选，JPEG/PNG/WebP，≤ 5 MB）");
    $("submit").textContent = L("Check in", "提交签到");
    $("recent-title").textContent = L("Recent check-ins", "最近签到");
    if (data) draw();
  }

  function taskLabel(task) { return L(task.label_en, task.label_zh); }

  function draw() {
    $("space").hidden = false;
    $("space-path").textContent = [data.site_name, ...data.path.slice(0, -1)].join(" › ");
    $("space-name").textContent = data.name;
    const box = $("tasks");
    const chosen = box.querySelector("input:checked")?.value;
    for (const node of box.querySelectorAll("label")) node.remove();
    data.tasks.forEach((task, i) => {
      const input = el("input", undefined, { type: "radio", name: "task", value: task.event });
      if (task.event === chosen || (!chosen && i === 0)) input.checked = true;
      const label = el("label", undefined, { class: "task" });
      label.append(input, el("span", taskLabel(task)));
      box.append(label);
    });
    if (!data.tasks.length) box.append(el("label", L("No obligation of this space takes a check-in.", "此空间没有需要签到的义务。")));
    $("submit").disabled = !data.tasks.length;
    const list = $("recent");
    list.replaceChildren();
    for (const item of data.recent) {
      const task = data.tasks.find((t) => t.event === item.task);
      const li = el("li", `${fmt(item.ts)} · ${task ? taskLabel(task) : item.task} · ${item.actor}`);
      li.dataset.eventId = item.event_id;
      if (item.note) li.append(el("span", ` · ${item.note}`));
      if (item.photo) li.append(el("span", ` · ${L("photo", "照片")}`, { class: "photo-mark" }));
      list.append(li);
    }
  }

  // Signed in as a user (the session cookie) or with a token (#token=): a page opened signed
  // in with neither goes to /login and comes back here (request.js).
  async function load() {
    try {
      data = await api(`checkins/${encodeURIComponent(site)}/${encodeURIComponent(space)}`, { limit: "5" });
      $("status").textContent = "";
      draw();
    } catch (error) {
      $("status").textContent = `${L("Cannot load this space", "无法加载此空间")}: ${error.message}`;
    }
  }

  async function uploadPhoto(file) {
    const answer = await upload("POST", "checkin-photos", {
      params: { site }, body: file, type: file.type || "application/octet-stream",
    });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      const why = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
      throw new Error(`${answer.status} ${why || answer.statusText}`);
    }
    return body.id;
  }

  $("checkin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return; // a double tap while the first is on its way
    const task = $("tasks").querySelector("input:checked")?.value;
    if (!task) return;
    busy = true;
    $("submit").disabled = true;
    $("result").dataset.state = "sending";
    $("result").textContent = L("Sending…", "提交中…");
    try {
      const file = $("photo").files[0];
      if (file && file.size > 5 * 1024 * 1024) throw new Error(L("the photo is over 5 MB", "照片超过 5 MB"));
      const photo = file ? await uploadPhoto(file) : null;
      const done = await send("POST", `checkins/${encodeURIComponent(site)}/${encodeURIComponent(space)}`,
        { event_id: eventId, task, note: $("note").value, photo });
      $("result").dataset.state = "done";
      $("result").dataset.eventId = done.event_id;
      $("result").textContent = `${L("Recorded", "已签到")} ✓ ${fmt(done.ts)}`;
      eventId = crypto.randomUUID(); // the next check-in is a new one
      $("note").value = "";
      $("photo").value = "";
      await load();
    } catch (error) {
      $("result").dataset.state = "error";
      $("result").textContent = `${L("Not recorded", "签到未成功")}: ${error.message}`;
    } finally {
      busy = false;
      $("submit").disabled = !(data && data.tasks.length);
    }
  });
  document.addEventListener("clausewatch:lang", labels);
  document.addEventListener("DOMContentLoaded", load);
})();
