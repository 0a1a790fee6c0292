// The traffic chart: requests/s as bars (left axis) and the success rate with and without
// rescues as lines (right axis, 0-100%), one point a minute, drawn as SVG by hand.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 900;
  const H = 220;
  const PAD = { left: 44, right: 48, top: 12, bottom: 24 };

  function node(tag, attrs, text) {
    const made = document.createElementNS(NS, tag);
    for (const name of Object.keys(attrs)) {
      made.setAttribute(name, String(attrs[name]));
    }
    if (text !== undefined) {
      made.textContent = text;
    }
    return made;
  }

  // A "nice" top for the rps axis: 1, 2 or 5 times a power of ten.
  function niceTop(value) {
    if (value <= 0) {
      return 1;
    }
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) {
        return step * power;
      }
    }
    return 10 * power;
  }

  function ratePath(points, field, x, y) {
    // A minute without requests has no rate: the line breaks there.
    let path = "";
    let pen = false;
    points.forEach(function (point, index) {
      const rate = point[field];
      if (rate === null || rate === undefined) {
        pen = false;
        return;
      }
      path += (pen ? "L" : "M") + x(index).toFixed(1) + "," + y(rate).toFixed(1);
      pen = true;
    });
    return path;
  }

  function draw(container, points) {
    const svg = node("svg", {
      viewBox: "0 0 " + W + " " + H,
      class: "chart-svg",
      role: "img",
      preserveAspectRatio: "none",
    });
    const innerW = W - PAD.left - PAD.right;
    const innerH = H - PAD.top - PAD.bottom;
    const count = Math.max(points.length, 2);
    const slot = innerW / count;
    const top = niceTop(Math.max(0, ...points.map(function (p) { return p.rps; })));
    const x = function (index) { return PAD.left + slot * (index + 0.5); };
    const yRps = function (rps) { return PAD.top + innerH * (1 - rps / top); };
    const yRate = function (rate) { return PAD.top + innerH * (1 - rate); };

    for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
      const y = PAD.top + innerH * (1 - fraction);
      svg.appendChild(node("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
      svg.appendChild(node("text", { x: PAD.left - 6, y: y + 4, class: "axis left" },
        String(+(top * fraction).toPrecision(3))));
      svg.appendChild(node("text", { x: W - PAD.right + 6, y: y + 4, class: "axis right" },
        Math.round(fraction * 100) + "%"));
    }
    points.forEach(function (point, index) {
      if (point.rps > 0) {
        const y = yRps(point.rps);
        svg.appendChild(node("rect", {
          x: (x(index) - slot * 0.4).toFixed(1),
          y: y.toFixed(1),
          width: (slot * 0.8).toFixed(1),
          height: (PAD.top + innerH - y).toFixed(1),
          class: point.rescued > 0 ? "bar rescued" : "bar",
        }));
      }
    });
    for (const field of ["without_rescues", "with_rescues"]) {
      const kind = field === "with_rescues" ? "with" : "without";
      svg.appendChild(node("path", { d: ratePath(points, field, x, yRate), class: "line " + kind }));
      // A dot per minute too: a minute alone (the first one) has no line to draw.
      points.forEach(function (point, index) {
        const rate = point[field];
        if (rate !== null && rate !== undefined) {
          svg.appendChild(node("circle", { cx: x(index).toFixed(1), cy: yRate(rate).toFixed(1), r: 3, class: "dot " + kind }));
        }
      });
    }
    for (const index of [0, Math.floor(points.length / 2), points.length - 1]) {
      if (points[index]) {
        svg.appendChild(node("text", { x: x(index), y: H - 6, class: "axis bottom" },
          points[index].time.slice(11, 16)));
      }
    }
    container.replaceChildren(svg);
  }

  window.MirApiChart = { draw: draw };
})();
