// The console's only script, and nothing depends on it: pages read and forms post without it.
// It keeps live regions current (polling with ETags: an unchanged page costs one small request),
// shows instants in the viewer's own time zone, and lets a button print the page.
(() => {
  "use strict";

  const viewerTimes = (root) => {
    const format = new Intl.DateTimeFormat(undefined, {
      weekday: "short", day: "numeric", month: "short",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short",
    });
    root.querySelectorAll("time[data-viewer-time]").forEach((el) => {
      el.textContent = format.format(new Date(el.getAttribute("datetime")));
    });
  };

  // A refresh redraws the region: what the reader had unfolded stays unfolded.
  const redraw = (region, html) => {
    const open = [...region.querySelectorAll("details[id][open]")].map((el) => el.id);
    region.innerHTML = html;
    open.forEach((id) => {
      const el = document.getElementById(id);
      if (el) { el.open = true; }
    });
  };

  const live = (region) => {
    const url = region.dataset.live;
    const every = Number(region.dataset.liveEvery || 2000);
    const status = document.getElementById(region.dataset.liveStatus || "");
    let etag = region.dataset.liveEtag || "";
    const say = (text) => { if (status) status.textContent = text; };
    const refresh = async () => {
      if (document.hidden) { return true; }
      const headers = { "Accept": "text/html" };
      if (etag) { headers["If-None-Match"] = etag; }
      const response = await fetch(url, { headers, credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        say("Your session has ended: reload the page to sign in again.");
        return false;
      }
      if (response.status === 200) {
        etag = response.headers.get("ETag") || "";
        redraw(region, await response.text());
        viewerTimes(region);
        say("Updated at " + new Date().toLocaleTimeString() + ".");
      }
      return true;
    };
    const loop = () => {
      refresh()
        .catch(() => { say("The service cannot be reached; trying again."); return true; })
        .then((again) => { if (again) { setTimeout(loop, every); } });
    };
    setTimeout(loop, every);
  };

  viewerTimes(document);
  document.querySelectorAll("[data-live]").forEach(live);
  document.querySelectorAll("button[data-print]").forEach((button) => {
    button.addEventListener("click", () => window.print());
  });
})();
