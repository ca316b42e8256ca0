// A candlestick chart drawn on a <canvas> (no library): candles {t (ms), open, high, low, close, volume} with
// numeric prices; live trades update the last candle or open a new one.
"use strict";
class CandleChart {
  constructor(canvas, intervalMs) {
    this.canvas = canvas;
    this.intervalMs = intervalMs;
    this.candles = [];
    this.maxCandles = 120;
  }
  setCandles(list, intervalMs) {
    this.intervalMs = intervalMs;
    this.candles = list.map(c => ({t: c.t, o: +c.open, h: +c.high, l: +c.low, c: +c.close, v: +c.volume}));
    this.draw();
  }
  addTrade(tsMs, price, qty) {
    const t = Math.floor(tsMs / this.intervalMs) * this.intervalMs;
    const last = this.candles[this.candles.length - 1];
    if (last && last.t === t) {
      last.h = Math.max(last.h, price); last.l = Math.min(last.l, price); last.c = price; last.v += qty;
    } else if (!last || t > last.t) {
      this.candles.push({t: t, o: price, h: price, l: price, c: price, v: qty});
      if (this.candles.length > 1000) this.candles.shift();
    } else {
      return;                          // older than the last candle: already counted by the history
    }
    this.draw();
  }
  draw() {
    const cv = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = cv.clientWidth || cv.width, h = cv.clientHeight || cv.height;
    if (cv.width !== Math.round(w * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const data = this.candles.slice(-this.maxCandles);
    g.font = "11px system-ui, sans-serif";
    if (!data.length) {
      g.fillStyle = "#7d8a98"; g.fillText("no trades yet", 10, 20); return;
    }
    const padR = 64, padB = 38, volH = 40;
    let lo = Infinity, hi = -Infinity, vmax = 0;
    for (const c of data) { lo = Math.min(lo, c.l); hi = Math.max(hi, c.h); vmax = Math.max(vmax, c.v); }
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    const plotH = h - padB - volH - 8;
    const y = p => 6 + (hi - p) / (hi - lo) * plotH;
    const step = (w - padR) / Math.max(data.length, 20);
    const bw = Math.max(1, step * 0.7);
    g.strokeStyle = "#26303b"; g.fillStyle = "#7d8a98"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const p = lo + (hi - lo) * i / 4, yy = Math.round(y(p)) + 0.5;
      g.beginPath(); g.moveTo(0, yy); g.lineTo(w - padR, yy); g.stroke();
      g.fillText(p.toFixed(2), w - padR + 4, yy + 4);
    }
    data.forEach((c, i) => {
      const x = i * step + step / 2;
      const up = c.c >= c.o;
      g.strokeStyle = g.fillStyle = up ? "#2ea66b" : "#e0524f";
      g.beginPath(); g.moveTo(Math.round(x) + 0.5, y(c.h)); g.lineTo(Math.round(x) + 0.5, y(c.l)); g.stroke();
      const top = y(Math.max(c.o, c.c)), bot = y(Math.min(c.o, c.c));
      g.fillRect(x - bw / 2, top, bw, Math.max(1, bot - top));
      const vh = vmax ? c.v / vmax * volH : 0;
      g.globalAlpha = 0.4; g.fillRect(x - bw / 2, h - padB - vh, bw, vh); g.globalAlpha = 1;
    });
    g.fillStyle = "#7d8a98";
    const every = Math.max(1, Math.ceil(64 / step));            // a time label every 64 px at least
    data.forEach((c, i) => {
      if (i % every) return;
      const d = new Date(c.t);
      g.fillText(d.toTimeString().slice(0, this.intervalMs < 60000 ? 8 : 5), i * step, h - padB + 16);
    });
    const last = data[data.length - 1];
    g.fillStyle = "#d8dee6"; g.fillText("last " + last.c, w - padR + 4, y(last.c) - 6 < 10 ? 10 : y(last.c) - 6);
  }
}
window.CandleChart = CandleChart;
