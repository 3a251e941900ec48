// "Live": reloads the page every few seconds, so that running tasks and relative times
// stay current. Off by default; the choice is remembered in this browser.
(() => {
  const box = document.getElementById("live");
  if (!box) return;
  const key = "backlite.live";
  const every = 3000;
  box.closest("label").hidden = false;
  box.checked = localStorage.getItem(key) === "1";
  let timer;
  const arm = () => {
    clearTimeout(timer);
    if (box.checked) timer = setTimeout(() => location.reload(), every);
  };
  box.addEventListener("change", () => {
    localStorage.setItem(key, box.checked ? "1" : "0");
    arm();
  });
  // Do not reload under someone selecting text to copy it.
  document.addEventListener("selectionchange", () => {
    const selecting = String(document.getSelection() || "").length > 0;
    if (selecting) clearTimeout(timer);
    else arm();
  });
  arm();
})();
