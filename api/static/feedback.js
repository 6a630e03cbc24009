// The public feedback form (compliance/templates/feedback.html) works without this script. With
// it, a photo over the form's limit is shrunk in the browser before it is sent (drawn at most
// 2048 px on its longer side, upright, and re-encoded as JPEG, which also drops its metadata),
// so a phone's full-size photo is not refused. Sending waits until the photo is ready.
"use strict";

(() => {
  const form = document.querySelector("form[enctype='multipart/form-data']");
  const input = form && form.elements.photo;
  if (!input || typeof DataTransfer === "undefined" || typeof createImageBitmap === "undefined") return;
  const limit = Number(input.dataset.maxBytes);
  const said = document.getElementById("photo-note");
  const EDGE = 2048;
  let ready = Promise.resolve();

  async function shrink(file) {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, EDGE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
    if (!blob || blob.size > limit) return;  // the server says what is wrong
    const list = new DataTransfer();
    list.items.add(new File([blob], "photo.jpg", { type: "image/jpeg" }));
    input.files = list.files;
    said.textContent = said.dataset.shrunk;
  }

  input.addEventListener("change", () => {
    said.textContent = "";
    const file = input.files[0];
    if (file && file.size > limit) ready = shrink(file).catch(() => {});
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    form.querySelector("button[type=submit]").disabled = true;
    ready.then(() => form.submit());
  });
})();
