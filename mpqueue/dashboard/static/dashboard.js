// Live refresh: each element with data-live is re-rendered by the server every
// data-refresh seconds (?fragment=1 returns that part alone, escaped as every page).
"use strict";
for (const part of document.querySelectorAll("[data-live]")) {
  const every = Number(part.dataset.refresh || "5") * 1000;
  const url = new URL(part.dataset.live, window.location.href);
  url.searchParams.set("fragment", "1");
  setInterval(async () => {
    try {
      const reply = await fetch(url, { credentials: "same-origin" });
      if (reply.ok) part.innerHTML = await reply.text();
    } catch (err) {
      // the server is restarting or gone: keep what is shown, try again later
    }
  }, every);
}
// "select all" boxes on the dead letters page
for (const all of document.querySelectorAll("input[data-select-all]")) {
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll("input[name=ids]")) box.checked = all.checked;
  });
}
