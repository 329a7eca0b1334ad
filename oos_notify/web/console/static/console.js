// The console's only script, and nothing depends on it: pages read and forms post without it.
// It keeps live regions current (polling with ETags: an unchanged page costs one small request),
// shows instants in the viewer's own time zone, and lets a button print the page.
(() => {
  "use strict";

  // One way of writing an instant, as the server writes it: "Sun 6 Dec 2026, 20:33 CST".
  const written = (date, timeZone) => {
    const parts = {};
    new Intl.DateTimeFormat("en-US", {
      timeZone, weekday: "short", day: "numeric", month: "short", year: "numeric",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short",
    }).formatToParts(date).forEach((part) => { parts[part.type] = part.value; });
    return `${parts.weekday} ${parts.day} ${parts.month} ${parts.year}, ` +
      `${parts.hour}:${parts.minute} ${parts.timeZoneName}`;
  };

  // Every instant shows the center's time; the viewer's own is on hover (and in the
  // cells that ask for it, data-viewer-time).
  const viewerTimes = (root) => {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const date = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) { return; }
      if (el.hasAttribute("data-viewer-time")) {
        el.textContent = written(date);
      } else {
        el.title = "Your time: " + written(date);
      }
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
        say("Updated " + written(new Date(), region.dataset.liveZone || "UTC") + ".");
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

  // An email's HTML part is shown whole: its frame grows to the height of what it holds (the
  // frame is same-origin and runs nothing; without this script it scrolls).
  const fit = (frame) => {
    const doc = frame.contentDocument;
    if (doc && doc.documentElement) {
      frame.style.height = (doc.documentElement.scrollHeight + 4) + "px";
    }
  };

  viewerTimes(document);
  document.querySelectorAll("iframe[data-fit]").forEach((frame) => {
    frame.addEventListener("load", () => fit(frame));
    window.addEventListener("resize", () => fit(frame));
    fit(frame);
  });
  document.querySelectorAll("[data-live]").forEach(live);
  document.querySelectorAll("button[data-print]").forEach((button) => {
    button.addEventListener("click", () => window.print());
  });
})();
