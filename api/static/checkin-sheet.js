// The printable sheet of check-in QR codes (/checkin/sheet?site=…&space=…): one card per space
// whose obligations accept a task, with the space's name, its tasks and the code of its phone
// page. The codes come from the service as SVG data URIs (api/routers/checkins.py).
"use strict";

(() => {
  const form = document.getElementById("controls");
  const params = new URLSearchParams(location.search);
  form.elements.site.value = params.get("site") || "";
  form.elements.space.value = params.get("space") || "";
  let data = null;

  function labels() {
    document.getElementById("title").textContent = L("Check-in QR codes", "签到二维码");
    document.getElementById("print").textContent = L("Print", "打印");
    document.getElementById("intro").textContent = L(
      "Print on A4 and put each code up in its space: staff scan it with a phone to record the work done.",
      "用 A4 纸打印，把每个二维码贴在对应空间：工作人员用手机扫码即可记录完成的工作。");
    if (data) draw();
  }

  function draw() {
    const grid = document.getElementById("sheet");
    grid.replaceChildren();
    for (const entry of data.entries) {
      const card = el("article", undefined, { class: "qr-card" });
      card.dataset.space = entry.space;
      card.append(
        el("img", undefined, { src: entry.qr_svg, alt: entry.url, "data-url": entry.url }),
        el("h2", entry.name),
        el("p", entry.path.slice(0, -1).join(" › "), { class: "path" }),
        el("p", entry.tasks.map((t) => L(t.label_en, t.label_zh)).join(" · "), { class: "tasks" }),
        el("p", entry.url, { class: "url" }),
      );
      grid.append(card);
    }
    document.getElementById("status").textContent = data.entries.length
      ? `${data.site_name} · ${data.entries.length} ${L("spaces", "个空间")}`
      : L("No space here has an obligation that takes a check-in.", "此范围内没有需要签到的空间。");
  }

  async function load() {
    const site = form.elements.site.value.trim();
    if (!site) return;
    const space = form.elements.space.value.trim();
    history.replaceState(null, "", `?${new URLSearchParams(space ? { site, space } : { site })}`);
    try {
      data = await api("checkins/sheet", { site, space });
      draw();
    } catch (error) {
      document.getElementById("status").textContent = `${L("Cannot load the sheet", "无法加载")}: ${error.message}`;
    }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  document.getElementById("print").addEventListener("click", () => window.print());
  document.addEventListener("clausewatch:lang", labels);
  document.addEventListener("DOMContentLoaded", () => { load(); });
})();
